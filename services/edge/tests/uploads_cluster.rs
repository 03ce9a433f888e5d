//! Uploads on a three-server JetStream cluster (contract section 7,
//! protocol section 13): one edge node per NATS server, with R3 streams, so
//! the upload buckets are replicated. An upload created on one node,
//! continued on a second and finished on a third reads back whole on the
//! first, through the edge and through NATS. With the NATS server of one
//! node killed, the other nodes still create, resume and finish uploads,
//! among them one half-stored through the lost server, and once it is back
//! its node answers for them again.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream;
use herald_testkit::upload::{metadata, png, Tus};
use herald_testkit::{eventually, EdgeOptions, EdgeProcess, NatsCluster, TokenBuilder, SECRET};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
/// How long requests may keep failing while streams elect new leaders
/// after a server is lost.
const ELECTION: Duration = Duration::from_secs(30);
/// The upload buckets' streams (protocol section 13, "Storage").
const BUCKET_STREAMS: [&str; 2] = ["OBJ_HERALD_UPLOADS", "KV_HERALD_UPLOAD_STATE"];

/// An edge node attached to cluster server `server` only, with R3 streams.
async fn edge_on(cluster: &NatsCluster, server: usize) -> EdgeProcess {
    let opts = EdgeOptions::new(cluster.servers()[server].url(), SECRET)
        .with_env("HERALD_STREAM_REPLICAS", "3");
    EdgeProcess::spawn(EDGE, opts).await
}

/// A cluster of three servers and one edge node on each.
async fn start() -> (NatsCluster, Vec<EdgeProcess>) {
    let cluster = NatsCluster::start(3).await;
    let mut edges = Vec::new();
    for server in 0..3 {
        edges.push(edge_on(&cluster, server).await);
    }
    (cluster, edges)
}

/// A tus client of `edge` with a user token of `acme`.
fn tus(edge: &EdgeProcess) -> Tus {
    let token = TokenBuilder::new(SECRET).sub("u1").org("acme").build();
    Tus::new(&edge.base_url(), Some(&token))
}

fn png_meta() -> String {
    metadata(&[("filename", "a.png"), ("filetype", "image/png")])
}

/// Stream `name`'s replicas and its leader's server name.
async fn placement(js: &jetstream::Context, name: &str) -> (usize, Option<String>) {
    let mut stream = js
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
    let info = stream
        .info()
        .await
        .unwrap_or_else(|e| panic!("stream {name} info: {e}"));
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
    (info.config.num_replicas, leader)
}

/// Creates an upload of `length` bytes on `t`, retrying (for [`ELECTION`])
/// while the buckets have no leader; returns its `Location`.
async fn create_retrying(t: &Tus, length: u64) -> String {
    eventually(ELECTION, "201 for a new upload", || async {
        let r = t.create(length, &png_meta()).await;
        if r.status == 201 {
            Ok(r.location())
        } else {
            Err(format!("{r}"))
        }
    })
    .await
}

/// Finishes the upload at `location` with the rest of `file` as a tus
/// client does: HEAD for the offset, PATCH from there, again while
/// answers are refusals (for [`ELECTION`]); each refusal's status is added
/// to `refused`.
async fn resume(t: &Tus, location: &str, file: &[u8], refused: &Mutex<Vec<u16>>) {
    let len = file.len() as u64;
    eventually(ELECTION, "the upload finished", || async {
        let r = t.head(location).await;
        if r.status != 200 {
            refused.lock().unwrap().push(r.status.as_u16());
            return Err(format!("{r}"));
        }
        let o = r.offset();
        if o == len {
            return Ok(());
        }
        let r = t.patch(location, o, &file[o as usize..]).await;
        if r.status == 204 && r.offset() == len {
            Ok(())
        } else {
            refused.lock().unwrap().push(r.status.as_u16());
            Err(format!("{r}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_continued_and_finished_on_three_servers_reads_back_whole() {
    let (cluster, edges) = start().await;
    let t: Vec<Tus> = edges.iter().map(tus).collect();
    let file = png(1_000_000, 21);
    let len = file.len() as u64;
    let loc = t[0].create_ok(len, &png_meta()).await;
    // Each node reads what another wrote through another server at once.
    assert_eq!(t[1].offset(&loc).await, 0);
    t[1].patch_all(&loc, 0, &file[..500_000], 250_000).await;
    assert_eq!(t[2].offset(&loc).await, 500_000);
    assert_eq!(t[0].offset(&loc).await, 500_000);
    let r = t[2].patch(&loc, 500_000, &file[500_000..]).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), len, "{r}");

    let sha = Sha256::digest(&file);
    let c = t[0].content(&loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(c.number("Content-Length"), len, "{c}");
    assert_eq!(Sha256::digest(&c.body), sha);
    let r = t[1].head(&loc).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.offset(), len, "{r}");

    let js = jetstream::new(cluster.connect().await);
    for name in BUCKET_STREAMS {
        let (replicas, leader) = placement(&js, name).await;
        eprintln!("{name}: R{replicas}, leader {leader:?}");
        assert_eq!(replicas, 3, "{name} follows HERALD_STREAM_REPLICAS");
    }
    let id = loc.strip_prefix("/v2/uploads/").unwrap();
    let store = js.get_object_store("HERALD_UPLOADS").await.unwrap();
    let mut object = store.get(format!("acme/{id}")).await.unwrap();
    let mut got = Vec::new();
    object.read_to_end(&mut got).await.unwrap();
    assert_eq!(Sha256::digest(&got), sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_go_on_through_the_other_servers_when_one_dies() {
    let (mut cluster, edges) = start().await;
    let t: Vec<Tus> = edges.iter().map(tus).collect();
    // Finished, and half-stored, through edge 1 and its server.
    let done = png(400_000, 22);
    let done_loc = t[1].create_ok(done.len() as u64, &png_meta()).await;
    t[1].patch_all(&done_loc, 0, &done, 200_000).await;
    let half = png(600_000, 23);
    let half_loc = t[0].create_ok(half.len() as u64, &png_meta()).await;
    t[1].patch_all(&half_loc, 0, &half[..300_000], 150_000)
        .await;

    let js = jetstream::new(cluster.servers()[0].connect().await);
    for name in BUCKET_STREAMS {
        let (replicas, leader) = placement(&js, name).await;
        eprintln!(
            "{name}: R{replicas}, leader {leader:?}; killing {}",
            cluster.servers()[1].name()
        );
    }
    cluster.stop(1);

    // What was stored through the lost server is there on the others, and
    // a client resumes it from the offset HEAD gives, as tus clients do.
    let refused = Mutex::new(Vec::new());
    let o = eventually(ELECTION, "HEAD through edge 2", || async {
        let r = t[2].head(&half_loc).await;
        if r.status == 200 {
            Ok(r.offset())
        } else {
            refused.lock().unwrap().push(r.status.as_u16());
            Err(format!("{r}"))
        }
    })
    .await;
    assert_eq!(o, 300_000);
    resume(&t[0], &half_loc, &half, &refused).await;
    let c = t[2].content(&half_loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&half));
    let c = t[0].content(&done_loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&done));

    // A new upload, across the two nodes left.
    let fresh = png(500_000, 24);
    let len = fresh.len() as u64;
    let loc = create_retrying(&t[0], len).await;
    t[2].patch_all(&loc, 0, &fresh[..250_000], 125_000).await;
    assert_eq!(t[2].offset(&loc).await, 250_000);
    assert_eq!(t[0].offset(&loc).await, 250_000);
    let r = t[0].patch(&loc, 250_000, &fresh[250_000..]).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), len, "{r}");
    let c = t[2].content(&loc).await;
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&fresh), "{c}");

    // The server comes back; its node answers for every upload again.
    cluster.restart(1).await;
    for name in BUCKET_STREAMS {
        cluster.wait_stream_current(name).await;
    }
    let o = eventually(ELECTION, "HEAD through edge 1", || async {
        let r = t[1].head(&loc).await;
        if r.status == 200 {
            Ok(r.offset())
        } else {
            Err(format!("{r}"))
        }
    })
    .await;
    assert_eq!(o, len);
    let c = t[1].content(&half_loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&half));
    // While the streams elected new leaders, every refusal said "retry".
    let refused = refused.into_inner().unwrap();
    eprintln!("{} refusals during the election", refused.len());
    assert!(refused.iter().all(|&s| s == 503), "{refused:?}");
}

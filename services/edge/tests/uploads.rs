//! Uploads end to end (contract section 7, protocol section 13): tus 1.0.0
//! at `/v2/uploads` over real HTTP against two edge nodes on one
//! nats-server. Discovery and the `Tus-Resumable` rule; creation rules;
//! PATCH rules (offset, content type, checksums, length, sniffing); any
//! node answers for any upload; completion (content, object store, event);
//! org scoping; termination. Nothing is timed.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use async_nats::jetstream;
use herald_testkit::upload::{checksum, metadata, Tus};
use herald_testkit::{eventually, Herald, RawPatch, TokenBuilder, SECRET};
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");
const PNG: &[u8] = &[0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];

async fn start() -> Herald {
    Herald::start(EDGE, 2).await
}

fn tus(h: &Herald, node: usize, org: &str) -> Tus {
    Tus::new(&h.edges[node].base_url(), Some(&h.token(org)))
}

/// `len` bytes of a PNG file: the signature, then a deterministic filler.
fn png(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9 ^ u32::from(seed);
    let mut v = PNG.to_vec();
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v.truncate(len);
    v
}

fn png_meta() -> String {
    metadata(&[("filename", "a.png"), ("filetype", "image/png")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_advertises_tus_and_a_missing_version_is_412() {
    let h = start().await;
    let anon = Tus::new(&h.edges[0].base_url(), None);
    let r = anon.options("/v2/uploads").await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{r}");
    let ext = r.header("Tus-Extension").unwrap_or_default().to_owned();
    for e in [
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    ] {
        assert!(ext.split(',').any(|x| x.trim() == e), "{e}: {r}");
    }
    assert_eq!(r.number("Tus-Max-Size"), 100 * 1024 * 1024, "{r}");
    let algs = r
        .header("Tus-Checksum-Algorithm")
        .unwrap_or_default()
        .to_owned();
    assert!(algs.contains("sha1") && algs.contains("sha256"), "{r}");

    let t = tus(&h, 0, "acme");
    let bare = t
        .bare(Method::POST, "/v2/uploads")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", png_meta());
    let r = t.send(bare).await;
    assert_eq!(r.status, 412, "{r}");
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_rules() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let r = t.create(100, &png_meta()).await;
    assert_eq!(r.status, 201, "{r}");
    let loc = r.location();
    let id = loc.strip_prefix("/v2/uploads/").unwrap();
    assert!(
        id.len() == 26
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{r}"
    );
    assert!(r.header("Upload-Expires").is_some(), "{r}");
    let missing = t
        .request(Method::POST, "/v2/uploads")
        .header("Upload-Metadata", png_meta());
    assert_eq!(t.send(missing).await.status, 400);
    assert_eq!(
        t.create(100 * 1024 * 1024 + 1, &png_meta()).await.status,
        413
    );
    let no_name = metadata(&[("filetype", "image/png")]);
    assert_eq!(t.create(10, &no_name).await.status, 400);
    let no_type = metadata(&[("filename", "a.png")]);
    assert_eq!(t.create(10, &no_type).await.status, 400);
    let html = metadata(&[("filename", "a.html"), ("filetype", "text/html")]);
    assert_eq!(t.create(10, &html).await.status, 415);
    // creation-with-upload
    let body = png(300, 1);
    let r = t.create_with_body(1000, &png_meta(), &body).await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.offset(), 300, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_rules_offset_checksum_length_and_sniffing() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let file = png(3000, 2);
    let loc = t.create_ok(3000, &png_meta()).await;
    assert_eq!(t.patch(&loc, 0, &file[..1000]).await.status, 204);
    let r = t.patch(&loc, 500, &file[500..1500]).await;
    assert_eq!(r.status, 409, "{r}");
    assert_eq!(t.offset(&loc).await, 1000);
    let bad = checksum("sha256", &Sha256::digest(b"other"));
    assert_eq!(
        t.patch_checked(&loc, 1000, &file[1000..1100], &bad)
            .await
            .status,
        460
    );
    assert_eq!(t.offset(&loc).await, 1000);
    let md5 = checksum("md5", &[0u8; 16]);
    assert_eq!(
        t.patch_checked(&loc, 1000, &file[1000..1100], &md5)
            .await
            .status,
        400
    );
    let good = checksum("sha256", &Sha256::digest(&file[1000..2000]));
    assert_eq!(
        t.patch_checked(&loc, 1000, &file[1000..2000], &good)
            .await
            .status,
        204
    );
    let sha1 = checksum("sha1", &sha1::Sha1::digest(&file[2000..2500]));
    assert_eq!(
        t.patch_checked(&loc, 2000, &file[2000..2500], &sha1)
            .await
            .status,
        204
    );
    let mut past = file[2500..].to_vec();
    past.extend_from_slice(b"extra");
    assert_eq!(t.patch(&loc, 2500, &past).await.status, 413);
    assert_eq!(t.offset(&loc).await, 2500);

    // A PNG declared, PDF bytes sent.
    let loc = t.create_ok(100, &png_meta()).await;
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.resize(100, b' ');
    assert_eq!(t.patch(&loc, 0, &pdf).await.status, 415);
    assert_eq!(t.head(&loc).await.status, 404);
    let csv = metadata(&[("filename", "a.csv"), ("filetype", "text/csv")]);
    let loc = t.create_ok(8, &csv).await;
    assert_eq!(t.patch(&loc, 0, b"a,b\0c,d\n").await.status, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_on_one_edge_finished_on_the_other_content_object_and_event() {
    let h = start().await;
    let (a, b) = (tus(&h, 0, "acme"), tus(&h, 1, "acme"));
    let token = h.token("acme");
    let cursor = h
        .poll(0, &token, "services=uploads&timeout=0")
        .await
        .last_seq();
    let file = png(200_000, 3);
    let meta = metadata(&[
        ("filename", "plan.png"),
        ("filetype", "image/png"),
        ("propertyId", "p1"),
        ("documentType", "floorplan"),
    ]);
    let loc = a.create_ok(file.len() as u64, &meta).await;
    a.patch_all(&loc, 0, &file[..70_000], 70_000).await;
    assert_eq!(b.offset(&loc).await, 70_000);
    let r = b.patch(&loc, 70_000, &file[70_000..]).await;
    assert_eq!(r.status, 204, "{r}");
    let sha = Sha256::digest(&file);
    let c = a.content(&loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(c.body, file);
    assert_eq!(c.header("Content-Type"), Some("image/png"));
    assert_eq!(c.number("Content-Length"), file.len() as u64);

    let id = loc.strip_prefix("/v2/uploads/").unwrap().to_owned();
    let js = jetstream::new(h.nats_client().clone());
    let store = js.get_object_store("HERALD_UPLOADS").await.unwrap();
    let mut object = store.get(format!("acme/{id}")).await.unwrap();
    let mut got = Vec::new();
    object.read_to_end(&mut got).await.unwrap();
    assert_eq!(Sha256::digest(&got), sha);

    let (events, _) = h.collect(1, &token, "services=uploads", cursor, 1).await;
    let e = &events[0];
    assert_eq!(e["eventType"], "upload.completed", "{e}");
    assert_eq!(e["entityType"], "upload", "{e}");
    assert_eq!(e["entityId"], id.as_str(), "{e}");
    let p = &e["payload"];
    assert_eq!(p["id"], id.as_str(), "{e}");
    assert_eq!(p["filename"], "plan.png", "{e}");
    assert_eq!(p["filetype"], "image/png", "{e}");
    assert_eq!(p["size"], file.len() as u64, "{e}");
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(p["sha256"], hex.as_str(), "{e}");
    assert_eq!(p["propertyId"], "p1", "{e}");
    assert_eq!(p["documentType"], "floorplan", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_org_gets_404_and_delete_terminates() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let other = tus(&h, 1, "globex");
    let loc = t.create_ok(100, &png_meta()).await;
    assert_eq!(t.patch(&loc, 0, &png(50, 4)).await.status, 204);
    assert_eq!(other.head(&loc).await.status, 404);
    assert_eq!(other.patch(&loc, 50, &png(50, 4)).await.status, 404);
    assert_eq!(other.content(&loc).await.status, 404);
    assert_eq!(other.delete(&loc).await.status, 404);
    assert_eq!(t.offset(&loc).await, 50);
    let star = Tus::new(
        &h.edges[0].base_url(),
        Some(&TokenBuilder::new(SECRET).org("*").build()),
    );
    assert_eq!(star.create(10, &png_meta()).await.status, 403);
    let anon = Tus::new(&h.edges[0].base_url(), None);
    assert_eq!(anon.create(10, &png_meta()).await.status, 401);

    assert_eq!(t.delete(&loc).await.status, 204);
    assert_eq!(t.head(&loc).await.status, 404);
    let file = png(64, 5);
    let done = t.create_ok(64, &png_meta()).await;
    assert_eq!(t.patch(&done, 0, &file).await.status, 204);
    assert_eq!(t.content(&done).await.status, 200);
    assert_eq!(t.delete(&done).await.status, 204);
    assert_eq!(t.content(&done).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_with_a_wrong_content_type_is_415_and_appends_nothing() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let file = png(200, 6);
    let loc = t.create_ok(200, &png_meta()).await;
    assert_eq!(t.patch(&loc, 0, &file[..100]).await.status, 204);
    // Built by hand: reqwest's `header` appends, so `patching` plus another
    // Content-Type would send two.
    let wrong_type = t
        .request(Method::PATCH, &loc)
        .header("Upload-Offset", "100")
        .header("Content-Type", "application/json")
        .body(file[100..].to_vec());
    let r = t.send(wrong_type).await;
    assert_eq!(r.status, 415, "{r}");
    assert_eq!(t.offset(&loc).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_patches_racing_at_one_offset_on_two_edges_store_one_body() {
    let h = start().await;
    let (a, b) = (tus(&h, 0, "acme"), tus(&h, 1, "acme"));
    for round in 0..4u8 {
        let (x, y) = (png(300_000, 10 + round), png(300_000, 50 + round));
        let loc = a.create_ok(300_000, &png_meta()).await;
        let (rx, ry) = tokio::join!(a.patch(&loc, 0, &x), b.patch(&loc, 0, &y));
        let mut statuses = [rx.status.as_u16(), ry.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [204, 409], "round {round}: {rx}\n{ry}");
        let winner = if rx.status == 204 { &x } else { &y };
        let c = a.content(&loc).await;
        assert_eq!(c.status, 200, "{c}");
        assert_eq!(
            Sha256::digest(&c.body),
            Sha256::digest(winner),
            "round {round}"
        );
    }
}

/// Messages in the uploads bucket's stream (chunks, and metadata of
/// finished objects).
async fn bucket_messages(js: &jetstream::Context) -> u64 {
    let mut stream = js
        .get_stream("OBJ_HERALD_UPLOADS")
        .await
        .expect("stream OBJ_HERALD_UPLOADS");
    stream.info().await.expect("stream info").state.messages
}

/// The sum of every series of Prometheus metric `name` on node `node`.
async fn prom(h: &Herald, node: usize, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", h.edges[node].base_url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_upload_expires_and_its_chunks_are_removed() {
    let h = Herald::start_with(EDGE, 2, &[("HERALD_UPLOAD_EXPIRES", "3s")]).await;
    let (a, b) = (tus(&h, 0, "acme"), tus(&h, 1, "acme"));
    let loc = a.create_ok(1000, &png_meta()).await;
    assert_eq!(a.patch(&loc, 0, &png(500, 8)).await.status, 204);
    let js = jetstream::new(h.nats_client().clone());
    assert!(bucket_messages(&js).await > 0);
    eventually(
        Duration::from_secs(30),
        "410 or 404 after expiry",
        || async {
            let s = b.head(&loc).await.status.as_u16();
            if s == 410 || s == 404 {
                Ok(())
            } else {
                Err(format!("HEAD {s}"))
            }
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the chunks removed", || async {
        let n = bucket_messages(&js).await;
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} messages in OBJ_HERALD_UPLOADS"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_upload_counts_in_the_metrics() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let completed = prom(&h, 0, "herald_uploads_completed_total").await;
    let bytes = prom(&h, 0, "herald_upload_bytes_total").await;
    let file = png(5000, 9);
    let loc = t.create_ok(5000, &png_meta()).await;
    assert_eq!(t.patch(&loc, 0, &file).await.status, 204);
    assert!(prom(&h, 0, "herald_uploads_completed_total").await >= completed + 1.0);
    assert!(prom(&h, 0, "herald_upload_bytes_total").await >= bytes + 5000.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_patch_leaves_an_offset_the_other_node_resumes() {
    let mut h = start().await;
    let b = tus(&h, 1, "acme");
    let len = 6 * 1024 * 1024;
    let file = png(len, 7);
    let loc = b.create_ok(len as u64, &png_meta()).await;
    let token = h.token("acme");
    let mut raw = RawPatch::start(h.edges[0].addr(), &loc, &token, 0, len as u64).await;
    for piece in file[..2 * 1024 * 1024].chunks(64 * 1024) {
        raw.send(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually(Duration::from_secs(20), "a stored piece", || async {
        let o = b.offset(&loc).await;
        if o > 0 {
            Ok(o)
        } else {
            Err(format!("offset {o}"))
        }
    })
    .await;
    h.edges[0].kill();
    let sent = raw.sent();
    let o = b.offset(&loc).await;
    assert!(o > 0 && o <= sent, "offset {o}, sent {sent}");
    let r = b.patch(&loc, o, &file[o as usize..]).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), len as u64, "{r}");
    let c = b.content(&loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&file));
    drop(raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_content_carry_the_headers_of_section_13() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let file = png(1000, 11);
    let meta = metadata(&[("filename", "Plan été.png"), ("filetype", "image/png")]);
    let loc = t.create_ok(1000, &meta).await;
    assert_eq!(t.patch(&loc, 0, &file[..400]).await.status, 204);
    let r = tus(&h, 1, "acme").head(&loc).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"), "{r}");
    assert_eq!(r.number("Upload-Length"), 1000, "{r}");
    assert_eq!(r.offset(), 400, "{r}");
    assert_eq!(r.header("Cache-Control"), Some("no-store"), "{r}");
    assert!(r.header("Upload-Expires").is_some(), "{r}");
    let echoed = herald_testkit::upload::parse_metadata(r.header("Upload-Metadata").unwrap());
    assert!(
        echoed.contains(&("filename".into(), "Plan été.png".into())),
        "{r}"
    );
    assert_eq!(t.content(&loc).await.status, 409);

    assert_eq!(t.patch(&loc, 400, &file[400..]).await.status, 204);
    let r = t.head(&loc).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.offset(), 1000, "{r}");
    let c = t.content(&loc).await;
    assert_eq!(c.status, 200, "{c}");
    let disposition = c
        .header("Content-Disposition")
        .unwrap_or_default()
        .to_owned();
    assert!(disposition.starts_with("attachment"), "{c}");
    assert!(
        disposition
            .to_ascii_uppercase()
            .contains("FILENAME*=UTF-8''PLAN%20%C3%A9T%C3%A9.PNG"),
        "{c}"
    );
    assert!(c.header("ETag").is_some_and(|e| !e.is_empty()), "{c}");
    use base64::Engine as _;
    let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&file));
    assert_eq!(
        c.header("Digest"),
        Some(format!("sha-256={digest}").as_str()),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_http_method_override_is_honoured_on_post() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let file = png(300, 12);
    let loc = t.create_ok(300, &png_meta()).await;
    let patch = t
        .request(Method::POST, &loc)
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(file[..100].to_vec());
    let r = t.send(patch).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(t.offset(&loc).await, 100);
    let delete = t
        .request(Method::POST, &loc)
        .header("X-HTTP-Method-Override", "DELETE");
    assert_eq!(t.send(delete).await.status, 204);
    assert_eq!(t.head(&loc).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_patch_gets_408_and_keeps_its_full_pieces() {
    let h = Herald::start_with(EDGE, 2, &[("HERALD_UPLOAD_IDLE_TIMEOUT", "1s")]).await;
    let t = tus(&h, 1, "acme");
    let file = png(512 * 1024, 13);
    let loc = t.create_ok(file.len() as u64, &png_meta()).await;
    let token = h.token("acme");
    let mut raw = RawPatch::start(h.edges[0].addr(), &loc, &token, 0, file.len() as u64).await;
    raw.send(&file[..200 * 1024]).await.unwrap();
    assert_eq!(raw.status(Duration::from_secs(20)).await, Some(408));
    let o = t.offset(&loc).await;
    assert!((128 * 1024..=200 * 1024).contains(&o), "offset {o}");
    let r = t.patch(&loc, o, &file[o as usize..]).await;
    assert_eq!(r.status, 204, "{r}");
    let c = t.content(&loc).await;
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&file));
}

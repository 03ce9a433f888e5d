//! Uploads end to end (contract section 7, protocol section 13): tus 1.0.0
//! at `/v2/uploads` over real HTTP against two edge nodes on one
//! nats-server. Discovery and the `Tus-Resumable` rule, also behind CORS;
//! creation rules (`Upload-Defer-Length`, malformed and unknown metadata);
//! PATCH rules (offset, content type, checksums and their size cap, length,
//! sniffing), each refusal leaving the offset where it was; any node
//! answers for any upload; completion (content, object store, event) and
//! what may follow it, announced once; org scoping; termination. Nothing is
//! timed.

// Tests may unwrap; clippy.toml allows it in #[test] functions only, not helpers.
#![allow(clippy::unwrap_used)]

use async_nats::jetstream;
use herald_testkit::upload::{checksum, metadata, png, Tus};
use herald_testkit::{eventually, Herald, RawPatch, TokenBuilder, SECRET};
use reqwest::Method;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncReadExt;

const EDGE: &str = env!("CARGO_BIN_EXE_herald-edge");

async fn start() -> Herald {
    Herald::start(EDGE, 2).await
}

fn tus(h: &Herald, node: usize, org: &str) -> Tus {
    Tus::new(&h.edges[node].base_url(), Some(&h.token(org)))
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

/// The object store bucket's stream: chunks, and metadata of finished
/// objects.
const OBJECTS: &str = "OBJ_HERALD_UPLOADS";
/// The key-value bucket's stream: one record per created upload.
const RECORDS: &str = "KV_HERALD_UPLOAD_STATE";

/// Messages in stream `name` (one of the upload buckets' streams).
async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    let mut stream = js
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
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
    assert!(stream_messages(&js, OBJECTS).await > 0);
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
        let n = stream_messages(&js, OBJECTS).await;
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} messages in {OBJECTS}"))
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
    let file = png(768 * 1024, 13);
    let loc = t.create_ok(file.len() as u64, &png_meta()).await;
    let token = h.token("acme");
    let mut raw = RawPatch::start(h.edges[0].addr(), &loc, &token, 0, file.len() as u64).await;
    // One full piece (256 KiB) and part of the next.
    raw.send(&file[..300 * 1024]).await.unwrap();
    assert_eq!(raw.status(Duration::from_secs(20)).await, Some(408));
    let o = t.offset(&loc).await;
    assert!((256 * 1024..=300 * 1024).contains(&o), "offset {o}");
    let r = t.patch(&loc, o, &file[o as usize..]).await;
    assert_eq!(r.status, 204, "{r}");
    let c = t.content(&loc).await;
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksummed_patch_over_the_checksum_cap_is_413_and_stores_nothing() {
    let cap = 64 * 1024;
    let h = Herald::start_with(
        EDGE,
        2,
        &[("HERALD_UPLOAD_CHECKSUM_MAX_BYTES", &cap.to_string())],
    )
    .await;
    let (a, b) = (tus(&h, 0, "acme"), tus(&h, 1, "acme"));
    let file = png(200_000, 14);
    let loc = a.create_ok(file.len() as u64, &png_meta()).await;
    assert_eq!(a.patch(&loc, 0, &file[..1000]).await.status, 204);
    let js = jetstream::new(h.nats_client().clone());
    let stored = stream_messages(&js, OBJECTS).await;

    // A right checksum does not help a body one byte over the cap.
    let over = &file[1000..1000 + cap + 1];
    let sum = checksum("sha256", &Sha256::digest(over));
    let r = a.patch_checked(&loc, 1000, over, &sum).await;
    assert_eq!(r.status, 413, "{r}");
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"), "{r}");
    assert_eq!(b.offset(&loc).await, 1000);
    assert_eq!(stream_messages(&js, OBJECTS).await, stored);

    // At the cap it is taken, and an unchecked body of any size streams.
    let at = &file[1000..1000 + cap];
    let sum = checksum("sha256", &Sha256::digest(at));
    let r = b.patch_checked(&loc, 1000, at, &sum).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), (1000 + cap) as u64, "{r}");
    let r = a
        .patch(&loc, (1000 + cap) as u64, &file[1000 + cap..])
        .await;
    assert_eq!(r.status, 204, "{r}");
    let c = b.content(&loc).await;
    assert_eq!(c.status, 200, "{c}");
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sha1_mismatch_is_460_and_appends_nothing_and_a_matching_sha1_is_taken() {
    let h = start().await;
    let (a, b) = (tus(&h, 0, "acme"), tus(&h, 1, "acme"));
    let file = png(1000, 15);
    let loc = a.create_ok(1000, &png_meta()).await;

    // At offset 0 a mismatch neither stores nor ends the upload.
    let wrong = checksum("sha1", &sha1::Sha1::digest(b"other"));
    let r = a.patch_checked(&loc, 0, &file[..100], &wrong).await;
    assert_eq!(r.status, 460, "{r}");
    assert_eq!(r.error_code().as_deref(), Some("checksum_mismatch"), "{r}");
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"), "{r}");
    assert_eq!(b.offset(&loc).await, 0);

    let right = checksum("sha1", &sha1::Sha1::digest(&file[..100]));
    let r = a.patch_checked(&loc, 0, &file[..100], &right).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), 100, "{r}");

    // The sha1 of the right bytes, sent with one byte changed.
    let mut tampered = file[100..600].to_vec();
    tampered[250] ^= 0x01;
    let right = checksum("sha1", &sha1::Sha1::digest(&file[100..600]));
    let r = b.patch_checked(&loc, 100, &tampered, &right).await;
    assert_eq!(r.status, 460, "{r}");
    assert_eq!(a.offset(&loc).await, 100);
    // A sha256-long digest named sha1 is malformed: 400.
    let mislabelled = checksum("sha1", &Sha256::digest(&file[100..600]));
    let r = b
        .patch_checked(&loc, 100, &file[100..600], &mislabelled)
        .await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(a.offset(&loc).await, 100);

    let r = b
        .patch_checked(
            &loc,
            100,
            &file[100..],
            &checksum("sha1", &sha1::Sha1::digest(&file[100..])),
        )
        .await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), 1000, "{r}");
    let c = a.content(&loc).await;
    assert_eq!(Sha256::digest(&c.body), Sha256::digest(&file), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_defer_length_is_400_and_creates_nothing() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    // The state bucket exists once one upload was created.
    t.create_ok(10, &png_meta()).await;
    let js = jetstream::new(h.nats_client().clone());
    let records = stream_messages(&js, RECORDS).await;

    let deferred = t
        .request(Method::POST, "/v2/uploads")
        .header("Upload-Defer-Length", "1")
        .header("Upload-Metadata", png_meta());
    let r = t.send(deferred).await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.header("Location"), None, "{r}");
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"), "{r}");
    // Not even beside an Upload-Length.
    let both = t
        .request(Method::POST, "/v2/uploads")
        .header("Upload-Defer-Length", "1")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", png_meta());
    let r = t.send(both).await;
    assert_eq!(r.status, 400, "{r}");
    assert_eq!(r.header("Location"), None, "{r}");
    // Discovery does not offer the extension.
    let ext = t.options("/v2/uploads").await;
    let offered = ext.header("Tus-Extension").unwrap_or_default();
    assert!(
        !offered
            .split(',')
            .any(|e| e.trim() == "creation-defer-length"),
        "{ext}"
    );
    assert_eq!(stream_messages(&js, RECORDS).await, records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_metadata_is_400_and_creates_nothing_and_unknown_keys_are_ignored() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    use base64::Engine as _;
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let name = b64(b"a.png");
    let png_type = format!("filetype {}", b64(b"image/png"));

    // Unknown keys (Uppy's, a bare key) are taken, and neither kept nor echoed.
    let meta = metadata(&[
        ("filename", "a.png"),
        ("filetype", "image/png"),
        ("relativePath", "photos/a.png"),
        ("name", "a.png"),
        ("is_confidential", ""),
    ]);
    let r = t.create(10, &meta).await;
    assert_eq!(r.status, 201, "{r}");
    let loc = r.location();
    let echoed = herald_testkit::upload::parse_metadata(
        t.head(&loc).await.header("Upload-Metadata").unwrap(),
    );
    assert_eq!(
        echoed,
        [
            ("filename".to_owned(), "a.png".to_owned()),
            ("filetype".to_owned(), "image/png".to_owned()),
        ]
    );

    let js = jetstream::new(h.nats_client().clone());
    let records = stream_messages(&js, RECORDS).await;
    let cases = [
        (
            "a value that is not base64",
            format!("filename %%%,{png_type}"),
        ),
        (
            "a value with a second word",
            format!("filename {name} {name},{png_type}"),
        ),
        (
            "a value that is not UTF-8",
            format!("filename {},{png_type}", b64(&[0xff, 0xfe, 0x2e])),
        ),
        (
            "filename twice",
            format!("filename {name},filename {},{png_type}", b64(b"b.png")),
        ),
        (
            "filetype twice",
            format!("filename {name},{png_type},{png_type}"),
        ),
        (
            "an unknown key twice",
            format!("filename {name},{png_type},x {name},x {name}"),
        ),
    ];
    for (what, header) in &cases {
        let r = t.create(10, header).await;
        assert_eq!(r.status, 400, "{what}: {header:?}: {r}");
        assert_eq!(r.header("Location"), None, "{what}: {r}");
    }
    assert_eq!(stream_messages(&js, RECORDS).await, records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaces_around_metadata_pairs_are_ignored_and_a_bare_key_has_no_value() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    // `, YS5wbmc=` is read as the bare (unknown, so ignored) key
    // `YS5wbmc=`, not as an empty key: clients that write `, ` between
    // pairs are taken as they are.
    let header = format!("{}, YS5wbmc=", png_meta());
    let location = t.create_ok(10, &header).await;
    let echoed = herald_testkit::upload::parse_metadata(
        t.head(&location).await.header("Upload-Metadata").unwrap(),
    );
    let keys: Vec<&str> = echoed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["filename", "filetype"], "{echoed:?}");
}

/// Events stored in `HERALD_EVENTS` whose `eventId` is `event_id`.
async fn stored_events(js: &jetstream::Context, event_id: &str) -> Vec<serde_json::Value> {
    let mut stream = js.get_stream("HERALD_EVENTS").await.expect("stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut found = Vec::new();
    for seq in state.first_sequence.max(1)..=state.last_sequence {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue;
        };
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
        if body["eventId"] == event_id {
            found.push(body);
        }
    }
    found
}

/// What `sub` has received up to now: a flush makes the server send
/// everything it routed to this client before, then nothing more is
/// awaited than a short quiet spell.
async fn received(
    client: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
) -> Vec<async_nats::Message> {
    use futures::StreamExt as _;
    client.flush().await.expect("flush");
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_is_idempotent_and_announced_once() {
    let h = start().await;
    let (a, b) = (tus(&h, 0, "acme"), tus(&h, 1, "acme"));
    let nats = h.nats_client();
    let mut events = nats
        .subscribe("herald.events.acme.uploads.>")
        .await
        .unwrap();
    let file = png(300_000, 16);
    let len = file.len() as u64;
    let loc = a.create_ok(len, &png_meta()).await;
    let id = loc.strip_prefix("/v2/uploads/").unwrap().to_owned();
    let r = a.patch(&loc, 0, &file).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), len, "{r}");
    // The completing PATCH answers after the event is acknowledged, so it
    // has been routed to this subscriber (a publisher retry would show
    // here too, under the same id).
    let announced = received(nats, &mut events).await;
    assert!(!announced.is_empty(), "no upload.completed on NATS");
    for m in &announced {
        let e: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(e["eventId"], format!("upload-{id}"), "{e}");
    }

    // Everything a client may do next, on both nodes, answers sanely.
    for t in [&b, &a] {
        let r = t.head(&loc).await;
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.offset(), len, "{r}");
        assert_eq!(r.number("Upload-Length"), len, "{r}");
        assert_eq!(r.header("Upload-Expires"), None, "finished: {r}");
        let c = t.content(&loc).await;
        assert_eq!(c.status, 200, "{c}");
        assert_eq!(Sha256::digest(&c.body), Sha256::digest(&file));
        // A retried last PATCH: empty, at the final offset. (Sent with
        // `Content-Length: 0`: hyper sends no length for an empty body.)
        let retried = t.patching(&loc, len, b"").header("Content-Length", "0");
        let r = t.send(retried).await;
        assert_eq!(r.status, 204, "{r}");
        assert_eq!(r.offset(), len, "{r}");
        // Bytes past the end, or an old offset: 409 with the final offset.
        let r = t.patch(&loc, len, b"more").await;
        assert_eq!(r.status, 409, "{r}");
        assert_eq!(r.offset(), len, "{r}");
        let r = t.patch(&loc, 1000, &file[1000..2000]).await;
        assert_eq!(r.status, 409, "{r}");
        assert_eq!(r.offset(), len, "{r}");
    }

    let again = received(nats, &mut events).await;
    assert!(
        again.is_empty(),
        "announced again after completion: {:?}",
        again.iter().map(|m| &m.payload).collect::<Vec<_>>()
    );
    let js = jetstream::new(nats.clone());
    let stored = stored_events(&js, &format!("upload-{id}")).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["eventType"], "upload.completed", "{}", stored[0]);
    let token = h.token("acme");
    let (delivered, _) = h
        .collect(1, &token, "services=uploads", 0, usize::MAX)
        .await;
    let ours: Vec<_> = delivered
        .iter()
        .filter(|e| e["entityId"] == id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{delivered:?}");
    assert_eq!(ours[0]["eventId"], format!("upload-{id}"), "{}", ours[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_last_patch_without_content_length_is_204() {
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let file = png(1000, 18);
    let loc = t.create_ok(1000, &png_meta()).await;
    assert_eq!(t.patch(&loc, 0, &file).await.status, 204);
    // reqwest (hyper) sends an empty body with neither Content-Length nor
    // Transfer-Encoding.
    let r = t.patch(&loc, 1000, b"").await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), 1000, "{r}");
}

/// Whether comma-separated header `name` of `r` lists `item` (any case).
fn lists(r: &herald_testkit::TusResponse, name: &str, item: &str) -> bool {
    r.header(name)
        .unwrap_or_default()
        .split(',')
        .any(|v| v.trim().eq_ignore_ascii_case(item))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cors_on_options_without_a_request_method_is_tus_discovery_and_preflights_allow_tus() {
    const ORIGIN: &str = "http://example.test";
    let h = Herald::start_with(EDGE, 1, &[("HERALD_CORS_ORIGINS", ORIGIN)]).await;
    let anon = Tus::new(&h.edges[0].base_url(), None);
    let t = tus(&h, 0, "acme");
    let loc = t.create_ok(100, &png_meta()).await;

    // Discovery, with and without an Origin: the routes answer, not CORS.
    for path in ["/v2/uploads", loc.as_str()] {
        for origin in [None, Some(ORIGIN)] {
            let mut discovery = anon.bare(Method::OPTIONS, path);
            if let Some(o) = origin {
                discovery = discovery.header("Origin", o);
            }
            let r = anon.send(discovery).await;
            assert_eq!(r.status, 204, "{origin:?}: {r}");
            assert_eq!(r.header("Tus-Version"), Some("1.0.0"), "{r}");
            assert!(lists(&r, "Tus-Extension", "creation"), "{r}");
            assert!(lists(&r, "Tus-Extension", "checksum"), "{r}");
            assert_eq!(r.number("Tus-Max-Size"), 100 * 1024 * 1024, "{r}");
        }
    }

    // A preflight for a checksummed PATCH.
    let preflight = anon
        .bare(Method::OPTIONS, &loc)
        .header("Origin", ORIGIN)
        .header("Access-Control-Request-Method", "PATCH")
        .header(
            "Access-Control-Request-Headers",
            "upload-offset,tus-resumable,upload-checksum",
        );
    let r = anon.send(preflight).await;
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN), "{r}");
    for m in ["PATCH", "HEAD", "DELETE", "POST"] {
        assert!(lists(&r, "Access-Control-Allow-Methods", m), "{m}: {r}");
    }
    for name in [
        "upload-offset",
        "tus-resumable",
        "upload-checksum",
        "upload-length",
        "upload-metadata",
        "content-type",
        "authorization",
    ] {
        assert!(
            lists(&r, "Access-Control-Allow-Headers", name),
            "{name}: {r}"
        );
    }
    // Another origin is not allowed.
    let foreign = anon
        .bare(Method::OPTIONS, &loc)
        .header("Origin", "http://elsewhere.test")
        .header("Access-Control-Request-Method", "PATCH");
    let r = anon.send(foreign).await;
    assert_eq!(r.header("Access-Control-Allow-Origin"), None, "{r}");

    // The real requests expose what a tus client reads.
    let create = t
        .request(Method::POST, "/v2/uploads")
        .header("Origin", ORIGIN)
        .header("Upload-Length", "100")
        .header("Upload-Metadata", png_meta());
    let r = t.send(create).await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN), "{r}");
    assert!(
        lists(&r, "Access-Control-Expose-Headers", "location"),
        "{r}"
    );
    let patch = t.patching(&loc, 0, &png(40, 17)).header("Origin", ORIGIN);
    let r = t.send(patch).await;
    assert_eq!(r.status, 204, "{r}");
    assert_eq!(r.offset(), 40, "{r}");
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some(ORIGIN), "{r}");
    for name in ["upload-offset", "upload-expires", "tus-resumable"] {
        assert!(
            lists(&r, "Access-Control-Expose-Headers", name),
            "{name}: {r}"
        );
    }
    let head = t.request(Method::HEAD, &loc).header("Origin", ORIGIN);
    let r = t.send(head).await;
    assert_eq!(r.status, 200, "{r}");
    assert!(
        lists(&r, "Access-Control-Expose-Headers", "upload-length"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_nobody_reads_holds_no_more_than_a_few_chunks_on_the_edge() {
    use tokio::io::AsyncWriteExt as _;
    const FILE: usize = 32 * 1024 * 1024;
    let h = start().await;
    let t = tus(&h, 0, "acme");
    let data = png(FILE, 7);
    let location = t.create_ok(FILE as u64, &png_meta()).await;
    let r = t.patch(&location, 0, &data).await;
    assert_eq!(r.status, 204, "{r}");

    // A client that asks for the file, reads the answer's head and stops.
    let edge = &h.edges[0];
    let before = edge.rss_kib();
    let mut socket = tokio::net::TcpStream::connect(edge.addr()).await.unwrap();
    let request = format!(
        "GET {location}/content HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        edge.addr(),
        h.token("acme")
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = socket.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    // Long enough for NATS to push the whole file, were it asked to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown_kib = edge.rss_kib().saturating_sub(before);
    assert!(
        grown_kib < 8 * 1024,
        "the edge grew by {grown_kib} KiB for a 32 MiB download nobody reads"
    );

    // Read on: the whole file arrives, unchanged.
    let mut rest = head[..n].to_vec();
    let body_at = loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut head).await.unwrap();
        assert!(n > 0, "the answer's head never ended");
        rest.extend_from_slice(&head[..n]);
    };
    let mut body = rest.split_off(body_at);
    while body.len() < FILE {
        let mut buf = vec![0u8; 256 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf))
            .await
            .expect("the rest of the file")
            .unwrap();
        assert!(n > 0, "the body ended after {} bytes", body.len());
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body.len(), FILE);
    assert_eq!(Sha256::digest(&body), Sha256::digest(&data));
}

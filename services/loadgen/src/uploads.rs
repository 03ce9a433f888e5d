//! `uploads`: tus uploads (contract section 7) through one edge, in four
//! phases on one target:
//!
//! 1. one `--size-mib` file streamed in a single PATCH (what curl or a
//!    server-side client sends), then the same file in `--chunk-kib`
//!    PATCHes, each with its SHA-256 (what the browser SDK sends);
//! 2. `--concurrent` uploads of `--each-mib` at once, chunked like the SDK;
//! 3. the large file written straight into a NATS object store bucket with
//!    async-nats: what storing the bytes costs without Herald;
//! 4. a `--resume-mib` upload streamed to the first edge, which is killed
//!    with SIGKILL part-way; the client asks the next edge for the offset
//!    (`HEAD`) and goes on there, and so on down the edges.
//!
//! The first edge's resident memory is sampled every 20 ms through phases
//! 1 and 2. Every finished upload is read back (`GET …/content`) and its
//! SHA-256 compared with what was sent and with the `ETag`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, object_store};
use hdrhistogram::Histogram;
use herald_testkit::upload::{checksum, metadata};
use herald_testkit::{RawPatch, TokenBuilder, Tus, TusResponse};
use rand::RngCore;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::cli::UploadsArgs;
use crate::error::LoadError;
use crate::probe::Probe;
use crate::procfs::{self, CpuSnapshot, CpuUse};
use crate::report::{opt1, Goal, Report};
use crate::session::wait_for_metrics;
use crate::target::Target;

const MIB: u64 = 1024 * 1024;
/// Bytes per write of a streamed PATCH body.
const WRITE: usize = 64 * 1024;
/// Bound on the answer to a PATCH once its body is sent.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two memory readings.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Bucket of the direct object-store write (deleted afterwards).
const BASELINE_BUCKET: &str = "LOADGEN_UPLOAD_BASELINE";
/// Every file is a PDF: the edge sniffs the first bytes against the type.
const FILETYPE: &str = "application/pdf";
const PDF_HEAD: &[u8] = b"%PDF-1.7\n";
/// Edge memory a 100 MiB upload may add: the file is never held whole.
const GOAL_MEMORY_MIB: f64 = 16.0;
/// Kill → the next edge answers with the stored offset.
const GOAL_RESUME_MS: f64 = 1_000.0;

/// Runs the four phases and reports them.
pub async fn run(args: UploadsArgs) -> Result<Report, LoadError> {
    if args.size_mib == 0 || args.each_mib == 0 || args.resume_mib == 0 || args.chunk_kib == 0 {
        return Err(LoadError::Setup(
            "--size-mib, --each-mib, --resume-mib and --chunk-kib must be at least 1".into(),
        ));
    }
    let mut target = Target::prepare(&args.target, &[]).await?;
    let result = measure(&args, &mut target).await;
    if let Some(dir) = &args.output.logs {
        let _ = target.save_logs(&dir.join("uploads"));
    }
    // Dropping the target stops spawned edges, then the nats-server.
    drop(target);
    Ok(report(&args, &result?))
}

/// The figures of one upload (or one group of concurrent ones).
struct Transfer {
    bytes: u64,
    elapsed: Duration,
    /// Every upload read back with the SHA-256 sent (and as its `ETag`);
    /// true until read back.
    intact: bool,
    /// Resident memory of the first edge before, and at most during.
    rss_kib: (Option<u64>, Option<u64>),
    cpu: CpuUse,
}

impl Transfer {
    fn mib_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn growth_mib(&self) -> Option<f64> {
        let (before, peak) = self.rss_kib;
        Some(peak?.saturating_sub(before?) as f64 / 1024.0)
    }
}

/// The concurrent phase: the group's figures, each upload's time, each
/// PATCH's time (µs), each upload's location and bytes (to read back).
struct Concurrent {
    transfer: Transfer,
    uploads_ms: Histogram<u64>,
    patch_us: Histogram<u64>,
    uploads: Vec<(String, Arc<Vec<u8>>)>,
}

/// A download read slowly: the edge's memory growth while the client lags.
struct SlowRead {
    /// Bytes the client had read when the reading was taken.
    read: u64,
    /// Resident memory of the first edge before the request and after.
    rss_kib: (Option<u64>, Option<u64>),
}

/// A slow reader's pace.
const SLOW_KIB_S: u64 = 1024;
/// How long the slow reader reads before the edge's memory is read.
const SLOW_FOR: Duration = Duration::from_secs(5);

/// One kill of the resume phase.
struct Resume {
    /// Kill → `HEAD` on the next edge answered.
    resume: Duration,
    /// Bytes sent to the killed edge that it had not stored.
    resent: u64,
}

/// What the throughput phases measured on one server.
struct Throughput {
    streamed: Transfer,
    chunked: Transfer,
    chunk_patch_us: Histogram<u64>,
    concurrent: Concurrent,
    download: Transfer,
    slow: SlowRead,
}

struct Results {
    herald: Throughput,
    /// The same phases on the peer tus server, when one was given.
    peer: Option<Throughput>,
    direct: Duration,
    resumes: Vec<Resume>,
    resumed_intact: Option<bool>,
}

/// A tus server under test: Herald's first edge, or the peer.
struct Server {
    tus: Tus,
    addr: SocketAddr,
    token: String,
    /// Its process (memory, CPU) and a second process whose CPU counts
    /// with it (nats-server behind Herald).
    pid: Option<u32>,
    backend_pid: Option<u32>,
    /// It names the SHA-256 in its `ETag` (Herald does, the peer does not).
    etag_sha256: bool,
}

async fn measure(args: &UploadsArgs, target: &mut Target) -> Result<Results, LoadError> {
    for e in &target.edges {
        wait_for_metrics(&Probe::new(&e.url)?).await?;
    }
    let org = format!("{}-uploads-{:08x}", args.prefix, rand::random::<u32>());
    let token = TokenBuilder::new(&target.jwt_secret)
        .sub(&format!("{}-user", args.prefix))
        .org(&org)
        .build();
    let edge = &target.edges[0];
    let herald = Server {
        tus: Tus::new(&edge.url, Some(&token)),
        addr: edge.addr,
        token: token.clone(),
        pid: edge.pid,
        backend_pid: target.nats_pid,
        etag_sha256: true,
    };
    let large = file(args.size_mib * MIB);
    println!("uploads: Herald");
    let herald = throughput(args, &herald, &large).await?;
    let peer = match &args.peer_tus_url {
        Some(url) => {
            println!("uploads: {}", args.peer_name);
            let peer = Server {
                tus: Tus::new(url, None),
                addr: socket_addr(url).await?,
                token: String::new(),
                pid: args.peer_tus_pid,
                backend_pid: None,
                etag_sha256: false,
            };
            Some(throughput(args, &peer, &large).await?)
        }
        None => None,
    };

    println!(
        "uploads: {} MiB straight into a NATS object store",
        args.size_mib
    );
    let direct = direct_write(&target.nats_url, &large).await?;
    drop(large);

    let (resumes, resumed_intact) = if target.edges.len() < 2 {
        (Vec::new(), None)
    } else {
        println!(
            "uploads: {} MiB across {} kill(s)",
            args.resume_mib,
            target.edges.len() - 1
        );
        let (resumes, intact) = resume(args, target, &token).await?;
        (resumes, Some(intact))
    };

    Ok(Results {
        herald,
        peer,
        direct,
        resumes,
        resumed_intact,
    })
}

/// The address of `http://host:port`.
async fn socket_addr(url: &str) -> Result<SocketAddr, LoadError> {
    let authority = url
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::Setup(format!("{url}: only http:// URLs are supported")))?;
    tokio::net::lookup_host(authority)
        .await
        .map_err(|e| LoadError::Setup(format!("resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| LoadError::Setup(format!("{authority} resolves to no address")))
}

/// The throughput phases on `server`: `large` streamed, then chunked, the
/// concurrent uploads, then every file read back and one read slowly.
async fn throughput(
    args: &UploadsArgs,
    server: &Server,
    large: &[u8],
) -> Result<Throughput, LoadError> {
    let (tus, pid, backend) = (&server.tus, server.pid, server.backend_pid);
    let chunk = args.chunk_kib * 1024;
    println!("  {} MiB streamed in one PATCH", args.size_mib);
    let watch = Watch::start(pid, backend);
    let started = Instant::now();
    let streamed_at = create(tus, large.len(), "large-streamed.pdf").await?;
    stream_body(
        server.addr,
        &streamed_at,
        &server.token,
        large,
        0,
        large.len(),
    )
    .await?;
    let mut streamed = watch.stop(large.len() as u64, started).await;

    println!(
        "  {} MiB in {} KiB checksummed PATCHes",
        args.size_mib, args.chunk_kib
    );
    let mut chunk_patch_us = Vec::new();
    let watch = Watch::start(pid, backend);
    let started = Instant::now();
    let chunked_at = create(tus, large.len(), "large-chunked.pdf").await?;
    send_chunks(tus, &chunked_at, large, chunk, &mut chunk_patch_us).await?;
    let mut chunked = watch.stop(large.len() as u64, started).await;

    println!(
        "  {} × {} MiB at once, {} KiB checksummed PATCHes",
        args.concurrent, args.each_mib, args.chunk_kib
    );
    let mut concurrent = concurrent(args, tus, pid, backend).await?;

    // Read-backs come after every upload: what a download leaves in the
    // server's memory must not count against the uploads.
    println!("  reading every file back");
    let etag = server.etag_sha256;
    let watch = Watch::start(pid, backend);
    let started = Instant::now();
    streamed.intact = read_back(tus, &streamed_at, large, etag).await?;
    let download = watch.stop(large.len() as u64, started).await;
    chunked.intact = read_back(tus, &chunked_at, large, etag).await?;
    for (location, data) in &concurrent.uploads {
        concurrent.transfer.intact &= read_back(tus, location, data, etag).await?;
    }
    println!(
        "  {} MiB read by a client taking {SLOW_KIB_S} KiB/s",
        args.size_mib
    );
    let slow = slow_download(tus, &streamed_at, pid).await?;
    Ok(Throughput {
        streamed,
        chunked,
        chunk_patch_us: quantiles(&chunk_patch_us),
        concurrent,
        download,
        slow,
    })
}

/// `len` bytes that pass as a PDF: the signature, then random bytes (no
/// compression anywhere can shrink them).
fn file(len: u64) -> Vec<u8> {
    let mut data = vec![0u8; len as usize];
    rand::rng().fill_bytes(&mut data);
    let head = PDF_HEAD.len().min(data.len());
    data[..head].copy_from_slice(&PDF_HEAD[..head]);
    data
}

fn expect(r: &TusResponse, status: StatusCode) -> Result<(), LoadError> {
    if r.status == status {
        Ok(())
    } else {
        Err(LoadError::Edge(format!("expected {status}: {r}")))
    }
}

/// `POST /v2/uploads` for a PDF of `len` bytes; its `Location`.
async fn create(tus: &Tus, len: usize, filename: &str) -> Result<String, LoadError> {
    let r = tus
        .create(
            len as u64,
            &metadata(&[("filename", filename), ("filetype", FILETYPE)]),
        )
        .await;
    expect(&r, StatusCode::CREATED)?;
    Ok(r.location())
}

/// One PATCH at `from` whose body is `data[from..]`, written in 64 KiB
/// pieces; returns once the edge answered 204.
async fn stream_body(
    addr: SocketAddr,
    location: &str,
    token: &str,
    data: &[u8],
    from: usize,
    to: usize,
) -> Result<(), LoadError> {
    let patch = start_stream(addr, location, token, data, from, to).await?;
    match patch.status(ANSWER_TIMEOUT).await {
        Some(204) => Ok(()),
        other => Err(LoadError::Edge(format!(
            "streamed PATCH {location} at {from}: answered {other:?}, expected 204"
        ))),
    }
}

/// Starts a PATCH at `from` announcing `data[from..]` and writes
/// `data[from..to]` of it.
async fn start_stream(
    addr: SocketAddr,
    location: &str,
    token: &str,
    data: &[u8],
    from: usize,
    to: usize,
) -> Result<RawPatch, LoadError> {
    let mut patch = RawPatch::start(
        addr,
        location,
        token,
        from as u64,
        (data.len() - from) as u64,
    )
    .await;
    for piece in data[from..to].chunks(WRITE) {
        patch.send(piece).await.map_err(|e| {
            LoadError::Edge(format!(
                "streamed PATCH {location}: the edge stopped reading after {} bytes: {e}",
                from as u64 + patch.sent()
            ))
        })?;
    }
    Ok(patch)
}

/// `data` in PATCHes of `chunk` bytes, each with `Upload-Checksum:
/// sha256`, one after the other (as the SDK sends them).
async fn send_chunks(
    tus: &Tus,
    location: &str,
    data: &[u8],
    chunk: usize,
    patch_us: &mut Vec<u64>,
) -> Result<(), LoadError> {
    let mut offset = 0u64;
    for piece in data.chunks(chunk) {
        let sum = checksum("sha256", &Sha256::digest(piece));
        let started = Instant::now();
        let r = tus.patch_checked(location, offset, piece, &sum).await;
        patch_us.push(started.elapsed().as_micros() as u64);
        expect(&r, StatusCode::NO_CONTENT)?;
        offset += piece.len() as u64;
        if r.offset() != offset {
            return Err(LoadError::Edge(format!("expected offset {offset}: {r}")));
        }
    }
    Ok(())
}

/// Reads the finished upload back: true when its bytes have the SHA-256
/// of `data` and, with `etag_sha256`, its `ETag` names that digest.
async fn read_back(
    tus: &Tus,
    location: &str,
    data: &[u8],
    etag_sha256: bool,
) -> Result<bool, LoadError> {
    let r = tus.content(location).await;
    expect(&r, StatusCode::OK)?;
    let sent = hex(&Sha256::digest(data));
    let stored = hex(&Sha256::digest(&r.body));
    let etag = r.header("ETag").map(|e| e.trim_matches('"').to_owned());
    if sent != stored || (etag_sha256 && etag.as_deref() != Some(sent.as_str())) {
        eprintln!(
            "uploads: {location} read back with SHA-256 {stored} (ETag {etag:?}), {} bytes; sent {sent}, {} bytes",
            r.body.len(),
            data.len()
        );
        return Ok(false);
    }
    Ok(true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--concurrent` uploads at once, each created and sent in checksummed
/// chunks.
async fn concurrent(
    args: &UploadsArgs,
    tus: &Tus,
    pid: Option<u32>,
    nats_pid: Option<u32>,
) -> Result<Concurrent, LoadError> {
    let files: Vec<Arc<Vec<u8>>> = (0..args.concurrent)
        .map(|_| Arc::new(file(args.each_mib * MIB)))
        .collect();
    let chunk = args.chunk_kib * 1024;
    let watch = Watch::start(pid, nats_pid);
    let started = Instant::now();
    let tasks: Vec<JoinHandle<Result<Sent, LoadError>>> = files
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let (tus, data) = (tus.clone(), Arc::clone(data));
            tokio::spawn(async move {
                let started = Instant::now();
                let location = create(&tus, data.len(), &format!("concurrent-{i}.pdf")).await?;
                let mut patch_us = Vec::new();
                send_chunks(&tus, &location, &data, chunk, &mut patch_us).await?;
                Ok((started.elapsed(), patch_us, location))
            })
        })
        .collect();
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(
            task.await
                .map_err(|e| LoadError::Edge(format!("an upload task failed: {e}")))??,
        );
    }
    let bytes = files.iter().map(|f| f.len() as u64).sum();
    let transfer = watch.stop(bytes, started).await;
    let uploads_ms: Vec<u64> = done
        .iter()
        .map(|(took, ..)| took.as_millis() as u64)
        .collect();
    let patch_us: Vec<u64> = done
        .iter()
        .flat_map(|(_, p, _)| p.iter().copied())
        .collect();
    Ok(Concurrent {
        transfer,
        uploads_ms: quantiles(&uploads_ms),
        patch_us: quantiles(&patch_us),
        uploads: done
            .into_iter()
            .map(|(_, _, location)| location)
            .zip(files)
            .collect(),
    })
}

/// One concurrent upload sent: its time, each PATCH's time (µs), its
/// location.
type Sent = (Duration, Vec<u64>, String);

/// Values into a histogram, for their quantiles.
fn quantiles(values: &[u64]) -> Histogram<u64> {
    // An hour in µs bounds every value taken here.
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for &v in values {
        h.saturating_record(v);
    }
    h
}

/// Downloads `location` at [`SLOW_KIB_S`] for [`SLOW_FOR`], then reads the
/// edge's memory: what the edge holds for a client that reads slower than
/// NATS delivers.
async fn slow_download(tus: &Tus, location: &str, pid: Option<u32>) -> Result<SlowRead, LoadError> {
    let before = pid.and_then(procfs::rss_kib);
    let mut response = tus
        .request(reqwest::Method::GET, &format!("{location}/content"))
        .timeout(SLOW_FOR * 4)
        .send()
        .await
        .map_err(|e| LoadError::Edge(format!("GET {location}/content: {e}")))?;
    if response.status() != StatusCode::OK {
        return Err(LoadError::Edge(format!(
            "GET {location}/content: {}",
            response.status()
        )));
    }
    let started = Instant::now();
    let mut read = 0u64;
    while started.elapsed() < SLOW_FOR {
        let owed = (started.elapsed().as_secs_f64() * (SLOW_KIB_S * 1024) as f64) as u64;
        if read < owed {
            match response.chunk().await {
                Ok(Some(piece)) => read += piece.len() as u64,
                Ok(None) => break,
                Err(e) => return Err(LoadError::Edge(format!("GET {location}/content: {e}"))),
            }
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let after = pid.and_then(procfs::rss_kib);
    drop(response);
    Ok(SlowRead {
        read,
        rss_kib: (before, after),
    })
}

/// `data` put into a fresh object store bucket (file storage, as the
/// edge's) with async-nats; the time the put took.
async fn direct_write(nats_url: &str, data: &[u8]) -> Result<Duration, LoadError> {
    let nats =
        |e: &dyn std::fmt::Display| LoadError::Nats(format!("direct object store write: {e}"));
    let client = async_nats::connect(nats_url).await.map_err(|e| nats(&e))?;
    let js = jetstream::new(client);
    let store = js
        .create_object_store(object_store::Config {
            bucket: BASELINE_BUCKET.to_owned(),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let started = Instant::now();
    let mut reader = data;
    store
        .put("baseline.pdf", &mut reader)
        .await
        .map_err(|e| nats(&e))?;
    let elapsed = started.elapsed();
    js.delete_object_store(BASELINE_BUCKET)
        .await
        .map_err(|e| nats(&e))?;
    Ok(elapsed)
}

/// One upload streamed to edge 0; halfway through what is left, the edge
/// it goes to is killed, the next one asked for the offset and the upload
/// continued there; the last edge gets the rest. Returns each kill's
/// figures and whether the file read back intact.
async fn resume(
    args: &UploadsArgs,
    target: &mut Target,
    token: &str,
) -> Result<(Vec<Resume>, bool), LoadError> {
    let data = file(args.resume_mib * MIB);
    let first = Tus::new(&target.edges[0].url, Some(token));
    let location = create(&first, data.len(), "resumed.pdf").await?;
    let kills = target.edges.len() - 1;
    let mut from = 0usize;
    let mut resumes = Vec::with_capacity(kills);
    for k in 0..kills {
        let upto = from + (data.len() - from) / 2;
        let patch = start_stream(target.edges[k].addr, &location, token, &data, from, upto).await?;
        let killed_at = target.kill_edge(k)?;
        drop(patch);
        let next = Tus::new(&target.edges[k + 1].url, Some(token));
        let r = next.head(&location).await;
        let resume = killed_at.elapsed();
        expect(&r, StatusCode::OK)?;
        let offset = r.offset() as usize;
        if offset < from || offset > upto {
            return Err(LoadError::Edge(format!(
                "after the kill the offset is {offset}; {from} was stored before and {upto} sent"
            )));
        }
        resumes.push(Resume {
            resume,
            resent: (upto - offset) as u64,
        });
        from = offset;
    }
    let last = &target.edges[kills];
    stream_body(last.addr, &location, token, &data, from, data.len()).await?;
    let intact = read_back(&Tus::new(&last.url, Some(token)), &location, &data, true).await?;
    Ok((resumes, intact))
}

/// Samples a process's resident memory until stopped, and its CPU time
/// (and nats-server's) over the same span.
struct Watch {
    before: Option<u64>,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
    cpu: CpuSnapshot,
    pids: (Option<u32>, Option<u32>),
}

impl Watch {
    fn start(pid: Option<u32>, nats_pid: Option<u32>) -> Watch {
        let before = pid.and_then(procfs::rss_kib);
        let peak = Arc::new(AtomicU64::new(before.unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = pid.map(|pid| {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = procfs::rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            })
        });
        Watch {
            before,
            peak,
            stop,
            sampler,
            cpu: CpuSnapshot::take(pid, nats_pid),
            pids: (pid, nats_pid),
        }
    }

    /// The transfer of `bytes` begun at `started`, ended now: memory
    /// before and at most since the start, CPU used since.
    async fn stop(self, bytes: u64, started: Instant) -> Transfer {
        let elapsed = started.elapsed();
        let cpu = self.cpu.until(&CpuSnapshot::take(self.pids.0, self.pids.1));
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler {
            let _ = sampler.await;
        }
        if let Some(rss) = self.pids.0.and_then(procfs::rss_kib) {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        let peak = self.before.map(|_| self.peak.load(Ordering::Relaxed));
        Transfer {
            bytes,
            elapsed,
            intact: true,
            rss_kib: (self.before, peak),
            cpu,
        }
    }
}

fn transfer_text(t: &Transfer) -> String {
    format!(
        "{:.1} MiB/s ({} MiB in {:.2} s)",
        t.mib_s(),
        t.bytes / MIB,
        t.elapsed.as_secs_f64()
    )
}

fn memory_text(t: &Transfer) -> String {
    rss_text(t.rss_kib)
}

fn rss_text((before, peak): (Option<u64>, Option<u64>)) -> String {
    match (before, peak) {
        (Some(b), Some(p)) => format!(
            "{:.1} MiB → peak {:.1} MiB (+{:.1} MiB)",
            b as f64 / 1024.0,
            p as f64 / 1024.0,
            p.saturating_sub(b) as f64 / 1024.0
        ),
        _ => "not measured (no pid)".into(),
    }
}

fn cpu_text(c: &CpuUse, peer: bool) -> String {
    if peer {
        return format!("server {} %, loadgen {} %", opt1(c.edge), opt1(c.loadgen));
    }
    format!(
        "edge {} %, nats-server {} %, loadgen {} %",
        opt1(c.edge),
        opt1(c.nats),
        opt1(c.loadgen)
    )
}

fn quantiles_text(h: &Histogram<u64>) -> String {
    format!(
        "{} / {} / {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    )
}

/// The throughput figures: Herald's, then the peer's beside them.
fn throughput_figures(report: &mut Report, args: &UploadsArgs, r: &Results) {
    let name = &args.peer_name;
    let row = |report: &mut Report, label: &str, text: &dyn Fn(&Throughput, bool) -> String| {
        let value = match &r.peer {
            Some(peer) => format!(
                "Herald {} · {name} {}",
                text(&r.herald, false),
                text(peer, true)
            ),
            None => text(&r.herald, false),
        };
        report.figure(label, value);
    };
    row(report, "one file, one streamed PATCH", &|t, _| {
        transfer_text(&t.streamed)
    });
    row(report, "  memory", &|t, _| memory_text(&t.streamed));
    row(report, "  CPU (% of a core)", &|t, p| {
        cpu_text(&t.streamed.cpu, p)
    });
    row(
        report,
        &format!("one file, {} KiB checksummed PATCHes", args.chunk_kib),
        &|t, _| transfer_text(&t.chunked),
    );
    row(report, "  PATCH time p50 / p99 / max (µs)", &|t, _| {
        quantiles_text(&t.chunk_patch_us)
    });
    row(report, "  memory", &|t, _| memory_text(&t.chunked));
    row(report, "  CPU (% of a core)", &|t, p| {
        cpu_text(&t.chunked.cpu, p)
    });
    row(
        report,
        &format!(
            "{} × {} MiB at once, {} KiB checksummed PATCHes",
            args.concurrent, args.each_mib, args.chunk_kib
        ),
        &|t, _| transfer_text(&t.concurrent.transfer),
    );
    row(report, "  upload time p50 / p99 / max (ms)", &|t, _| {
        quantiles_text(&t.concurrent.uploads_ms)
    });
    row(report, "  PATCH time p50 / p99 / max (µs)", &|t, _| {
        quantiles_text(&t.concurrent.patch_us)
    });
    row(report, "  memory", &|t, _| {
        memory_text(&t.concurrent.transfer)
    });
    row(report, "  CPU (% of a core)", &|t, p| {
        cpu_text(&t.concurrent.transfer.cpu, p)
    });
    row(report, "download of the streamed file", &|t, _| {
        transfer_text(&t.download)
    });
    row(report, "  memory", &|t, _| memory_text(&t.download));
    row(report, "  CPU (% of a core)", &|t, p| {
        cpu_text(&t.download.cpu, p)
    });
    row(
        report,
        &format!(
            "download read at {SLOW_KIB_S} KiB/s for {} s",
            SLOW_FOR.as_secs()
        ),
        &|t, _| {
            format!(
                "{:.1} MiB read; memory {}",
                t.slow.read as f64 / MIB as f64,
                rss_text(t.slow.rss_kib)
            )
        },
    );
}

fn report(args: &UploadsArgs, r: &Results) -> Report {
    let title = args
        .output
        .title
        .clone()
        .unwrap_or_else(|| "Uploads: tus through one edge, resume after a kill".into());
    let mut report = Report::new(title);
    throughput_figures(&mut report, args, r);
    let h = &r.herald;
    let direct_mib_s = (args.size_mib as f64) / r.direct.as_secs_f64().max(1e-9);
    report.figure(
        "same file, async-nats object store put (no Herald)",
        format!(
            "{direct_mib_s:.1} MiB/s ({} MiB in {:.2} s)",
            args.size_mib,
            r.direct.as_secs_f64()
        ),
    );
    report.figure(
        "  Herald's streamed PATCH vs the direct put",
        format!("{:.0} %", h.streamed.mib_s() / direct_mib_s * 100.0),
    );
    for (i, k) in r.resumes.iter().enumerate() {
        report.figure(
            &format!("kill {}: kill → offset from the next edge", i + 1),
            format!(
                "{:.1} ms, {:.2} MiB sent again",
                k.resume.as_secs_f64() * 1e3,
                k.resent as f64 / MIB as f64
            ),
        );
    }

    let intact = h.streamed.intact
        && h.chunked.intact
        && h.concurrent.transfer.intact
        && r.resumed_intact.unwrap_or(true);
    report.goal(Goal::new(
        "every upload read back with the SHA-256 sent",
        "yes",
        if intact { "yes" } else { "NO (see above)" }.into(),
        Some(intact),
    ));
    if let Some(peer) = &r.peer {
        let intact = peer.streamed.intact && peer.chunked.intact && peer.concurrent.transfer.intact;
        report.figure(
            &format!("{}: every upload read back intact", args.peer_name),
            if intact { "yes" } else { "NO (see above)" },
        );
    }
    let growth = memory_growth(h);
    report.goal(Goal::new(
        "edge memory growth, uploads and downloads, worst",
        &format!("≤ {GOAL_MEMORY_MIB:.0} MiB (no file held whole)"),
        growth.map_or_else(|| "not measured".into(), |g| format!("{g:.1} MiB")),
        growth.map(|g| g <= GOAL_MEMORY_MIB),
    ));
    if let Some(peer) = &r.peer {
        let (h_rate, p_rate) = (h.streamed.mib_s(), peer.streamed.mib_s());
        report.goal(Goal::new(
            &format!("streamed upload vs {}", args.peer_name),
            "≥ 1× (with every byte in replicated-capable JetStream, not a local disk)",
            format!("{:.2}×", h_rate / p_rate.max(1e-9)),
            Some(h_rate >= p_rate),
        ));
        let (h_rate, p_rate) = (
            h.concurrent.transfer.mib_s(),
            peer.concurrent.transfer.mib_s(),
        );
        report.goal(Goal::new(
            &format!("concurrent chunked uploads vs {}", args.peer_name),
            "≥ 1×",
            format!("{:.2}×", h_rate / p_rate.max(1e-9)),
            Some(h_rate >= p_rate),
        ));
    }
    let worst = r
        .resumes
        .iter()
        .map(|k| k.resume.as_secs_f64() * 1e3)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    report.goal(Goal::new(
        "kill → offset from another edge, worst",
        &format!("≤ {GOAL_RESUME_MS:.0} ms"),
        worst.map_or_else(
            || "not measured (one edge)".into(),
            |w| format!("{w:.1} ms"),
        ),
        worst.map(|w| w <= GOAL_RESUME_MS),
    ));
    report
}

/// The largest memory growth of any phase on one server.
fn memory_growth(t: &Throughput) -> Option<f64> {
    let slow = match t.slow.rss_kib {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / 1024.0),
        _ => None,
    };
    [&t.streamed, &t.chunked, &t.concurrent.transfer, &t.download]
        .iter()
        .map(|t| t.growth_mib())
        .chain([slow])
        .collect::<Option<Vec<f64>>>()
        .map(|g| g.into_iter().fold(0.0, f64::max))
}

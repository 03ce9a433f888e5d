//! The real `herald` binary against a real nats-server (and a real edge
//! for `check --edges`, when the edge binary is built beside it).

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use herald_proto::claims::{Claims, Role};
use herald_proto::Partitions;
use herald_publisher::stream::{events_stream, partition_stream, StreamLimits};
use herald_testkit::{refused_port, EdgeOptions, EdgeProcess, NatsServer, NatsUser, SECRET};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const HERALD: &str = env!("CARGO_BIN_EXE_herald");
/// Longest a single `herald` run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `herald` with `args`, none of the test's own `HERALD_*` variables, and
/// NATS at `nats_url`.
fn herald(nats_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(HERALD);
    for (key, _) in std::env::vars() {
        if key.starts_with("HERALD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("HERALD_NATS_URL", nats_url)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(nats_url: &str, args: &[&str]) -> Output {
    let out = tokio::time::timeout(RUN_TIMEOUT, herald(nats_url, args).output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} did not finish within {RUN_TIMEOUT:?}"))
        .expect("run herald");
    eprintln!(
        "herald {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Creates the events streams as the edge creates them.
async fn create_streams(nats: &NatsServer, partitions: u32) {
    let js = async_nats::jetstream::new(nats.connect().await);
    let p = Partitions::new(partitions).expect("partitions");
    for k in 0..p.count() {
        let config = if p.is_partitioned() {
            partition_stream("HERALD_EVENTS", p, k, StreamLimits::default())
        } else {
            events_stream("HERALD_EVENTS", StreamLimits::default())
        };
        js.create_stream(config).await.expect("create stream");
    }
}

/// The edge binary built beside `herald` (same target directory), if any.
fn edge_binary() -> Option<PathBuf> {
    let bin = PathBuf::from(HERALD).with_file_name("herald-edge");
    bin.is_file().then_some(bin)
}

#[tokio::test]
async fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["publish", "--help"],
        &["tail", "--help"],
        &["token", "--help"],
        &["check", "--help"],
    ] {
        let out = run("nats://127.0.0.1:1", args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(stdout(&out).contains("Usage: herald"), "{args:?}");
    }
    let out = run("nats://127.0.0.1:1", &["publish", "--no-such-flag"]).await;
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn token_verifies_with_the_expected_claims() {
    let out = run(
        "nats://127.0.0.1:1",
        &[
            "token",
            "--org",
            "acme",
            "--sub",
            "u1",
            "--role",
            "publisher",
            "--services",
            "finance,tasks",
            "--properties",
            "p1",
            "--ttl",
            "2h",
            "--secret",
            SECRET,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let token = stdout(&out).trim().to_owned();
    let claims = herald_proto::token::verify_hs256(SECRET, &token).expect("verifies");
    let now = i64::try_from(herald_testkit::token::now_secs()).expect("now");
    assert!((claims.exp - (now + 7200)).abs() <= 5, "{claims:?}");
    assert_eq!(
        claims,
        Claims {
            props: Some(vec!["p1".into()]),
            svcs: Some(vec!["finance".into(), "tasks".into()]),
            role: Some(Role::Publisher),
            ..Claims::new("u1", "acme", claims.exp)
        }
    );
    assert!(herald_proto::token::verify_hs256("other", &token).is_err());

    // The secret from the environment, and a plain user token by default.
    let out = herald(
        "nats://127.0.0.1:1",
        &["token", "--org", "acme", "--sub", "u2"],
    )
    .env("HERALD_JWT_SECRET", "env-secret-of-16-bytes")
    .output()
    .await
    .expect("run herald");
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let claims =
        herald_proto::token::verify_hs256("env-secret-of-16-bytes", &token).expect("verifies");
    assert_eq!((claims.role, claims.svcs, claims.props), (None, None, None));

    let out = run(
        "nats://127.0.0.1:1",
        &["token", "--org", "ac.me", "--sub", "u", "--secret", SECRET],
    )
    .await;
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn publish_then_tail_shows_each_event_once_decoded_and_filtered() {
    let nats = NatsServer::start().await;
    create_streams(&nats, 1).await;
    let url = nats.url();
    let publish = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["publish"];
            all.extend_from_slice(args);
            run(&url, &all).await
        }
    };

    let first = publish(&[
        "--org",
        "acme",
        "--service",
        "finance",
        "--property",
        "p1",
        "--type",
        "expense.created",
        "--id",
        "e-1",
        "--data",
        r#"{"amount":10}"#,
    ])
    .await;
    assert_eq!(first.status.code(), Some(0));
    let ack = &json_lines(&first)[0];
    assert_eq!(
        (&ack["stream"], &ack["duplicate"]),
        (&Value::from("HERALD_EVENTS"), &Value::from(false))
    );
    let seq = ack["seq"].as_u64().expect("seq");
    // The same id again: JetStream keeps the first copy.
    let again = publish(&[
        "--org",
        "acme",
        "--service",
        "finance",
        "--property",
        "p1",
        "--type",
        "expense.created",
        "--id",
        "e-1",
        "--data",
        r#"{"amount":10}"#,
    ])
    .await;
    let ack = &json_lines(&again)[0];
    assert_eq!(
        (ack["seq"].as_u64(), &ack["duplicate"]),
        (Some(seq), &Value::from(true))
    );
    // The same id from another org is another event.
    let other_org = publish(&[
        "--org",
        "globex",
        "--service",
        "finance",
        "--property",
        "p1",
        "--type",
        "x",
        "--id",
        "e-1",
    ])
    .await;
    assert_eq!(json_lines(&other_org)[0]["duplicate"], false);
    for args in [
        &[
            "--org",
            "acme",
            "--service",
            "tasks",
            "--type",
            "task.done",
            "--msgpack",
            "--data",
            "[1]",
        ][..],
        &[
            "--org",
            "acme",
            "--service",
            "finance",
            "--property",
            "p2",
            "--type",
            "x",
        ],
        &[
            "--org",
            "acme",
            "--service",
            "guest",
            "--property",
            "p1",
            "--type",
            "x",
        ],
    ] {
        let mut all = vec!["publish"];
        all.extend_from_slice(args);
        assert_eq!(run(&url, &all).await.status.code(), Some(0), "{args:?}");
    }

    let out = run(
        &url,
        &[
            "tail",
            "--org",
            "acme",
            "--service",
            "finance,tasks",
            "--property",
            "p1",
            "--no-follow",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let events = json_lines(&out);
    let shown: Vec<(&str, &Value)> = events
        .iter()
        .map(|e| (e["service"].as_str().unwrap_or_default(), &e["propertyId"]))
        .collect();
    assert_eq!(
        shown,
        [("finance", &Value::from("p1")), ("tasks", &Value::Null)],
        "{events:?}"
    );
    assert_eq!(
        events[0],
        serde_json::json!({"seq": seq, "orgId": "acme", "service": "finance", "propertyId": "p1",
            "eventId": "e-1", "eventType": "expense.created",
            "timestamp": events[0]["timestamp"], "payload": {"amount": 10}})
    );
    assert!(events[0]["timestamp"].as_i64().is_some_and(|t| t > 0));
    assert_eq!(events[1]["payload"], serde_json::json!([1]));

    // --last counts the org's events back from the head.
    let out = run(
        &url,
        &["tail", "--org", "acme", "--last", "2", "--no-follow"],
    )
    .await;
    let services: Vec<Value> = json_lines(&out)
        .iter()
        .map(|e| e["service"].clone())
        .collect();
    assert_eq!(services, ["finance", "guest"]);
    let out = run(
        &url,
        &["tail", "--org", "acme", "--from-seq", "1", "--no-follow"],
    )
    .await;
    assert_eq!(json_lines(&out).len(), 4);
}

#[tokio::test]
async fn tail_follows_new_events_until_interrupted() {
    let nats = NatsServer::start().await;
    create_streams(&nats, 1).await;
    let mut child = herald(&nats.url(), &["tail", "--org", "acme"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    // The consumer starts at the head: publish until the first event shows.
    let line = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let out = run(
                &nats.url(),
                &[
                    "publish",
                    "--org",
                    "acme",
                    "--service",
                    "finance",
                    "--type",
                    "live",
                ],
            )
            .await;
            assert_eq!(out.status.code(), Some(0));
            if let Ok(Ok(Some(line))) =
                tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await
            {
                return line;
            }
        }
    })
    .await
    .expect("tail printed a new event");
    let event: Value = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(event["eventType"], "live");

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("tail exits on Ctrl-C")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn bad_input_and_unreachable_nats_have_their_exit_codes() {
    let refused = refused_port();
    let url = format!("nats://127.0.0.1:{}", refused.port());
    let base = [
        "publish",
        "--org",
        "acme",
        "--service",
        "finance",
        "--type",
        "x",
    ];
    let with = |extra: &[&'static str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };
    for bad in [
        &["--data", "{nope"][..],
        &["--property", "p.1"],
        &["--id", ""],
    ] {
        let out = run(&url, &with(bad)).await;
        assert_eq!(out.status.code(), Some(64), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("herald: "));
    }
    assert_eq!(run(&url, &with(&[])).await.status.code(), Some(69));
    assert_eq!(
        run(&url, &["tail", "--org", "acme", "--no-follow"])
            .await
            .status
            .code(),
        Some(69)
    );
    let out = run(&url, &["check"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("FAILED nats: cannot connect"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn check_passes_on_a_good_partitioned_deployment() {
    let nats = NatsServer::start_partitioned(4).await;
    create_streams(&nats, 4).await;
    let edge = match edge_binary() {
        Some(bin) => Some(
            EdgeProcess::spawn(
                bin,
                EdgeOptions::new(nats.url(), SECRET).with_env("HERALD_PARTITIONS", "4"),
            )
            .await,
        ),
        None => {
            eprintln!("no herald-edge beside {HERALD}: checking without --edges");
            None
        }
    };
    let mut args = vec!["check", "--partitions", "4"];
    let edges = edge.as_ref().map(EdgeProcess::base_url);
    if let Some(url) = &edges {
        args.extend(["--edges", url]);
    }
    let out = run(&nats.url(), &args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for line in [
        "ok     nats:",
        "ok     jetstream:",
        "ok     streams: 4 partition streams HERALD_EVENTS_0..HERALD_EVENTS_3",
        "ok     mapping: an event of each of the 4 partitions lands in its stream",
        "warn   permissions:",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    if edges.is_some() {
        assert!(text.contains("ok     edge http://"), "{text}");
    }

    // Events of every partition go in and come out decoded.
    for org in ["acme", "globex", "initech", "umbrella"] {
        let out = run(
            &nats.url(),
            &[
                "publish",
                "--partitions",
                "4",
                "--org",
                org,
                "--service",
                "finance",
                "--type",
                "x",
            ],
        )
        .await;
        let p = Partitions::new(4).expect("4");
        assert_eq!(
            json_lines(&out)[0]["stream"],
            format!("HERALD_EVENTS_{}", p.of(org))
        );
        let out = run(
            &nats.url(),
            &["tail", "--partitions", "4", "--org", org, "--no-follow"],
        )
        .await;
        let events = json_lines(&out);
        assert_eq!(events.len(), 1, "{org}: {events:?}");
        assert_eq!(events[0]["orgId"], org);
    }

    // A wrong partition count is caught.
    let out = run(&nats.url(), &["check", "--partitions", "2"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // An edge that is not there fails its check.
    let gone = refused_port();
    let out = run(
        &nats.url(),
        &[
            "check",
            "--partitions",
            "4",
            "--edges",
            &format!("http://127.0.0.1:{}", gone.port()),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("FAILED edge http://127.0.0.1:"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn check_fails_without_the_partition_mapping() {
    let nats = NatsServer::start().await;
    create_streams(&nats, 4).await;
    let out = run(&nats.url(), &["check", "--partitions", "4"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ok     streams: 4 partition streams"),
        "{text}"
    );
    assert!(
        text.contains("FAILED mapping: events of partition 0: no stream stores them")
            && text.contains(
                "the NATS servers need the subject mapping herald.events.*.*.* -> \
                 herald.events.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{partition(4,1)}}"
            ),
        "{text}"
    );
}

#[tokio::test]
async fn check_reports_what_the_credentials_may_do() {
    let nats = NatsServer::start_with_accounts().await;
    let as_user = |user: &NatsUser| {
        format!(
            "nats://{}:{}@127.0.0.1:{}",
            user.name,
            user.password,
            nats.port()
        )
    };
    // The edge user creates the stream, as an edge does.
    let js = async_nats::jetstream::new(nats.connect_as(&NatsUser::edge()).await);
    js.create_stream(events_stream("HERALD_EVENTS", StreamLimits::default()))
        .await
        .expect("create stream");

    // A publisher may not use the JetStream API, but sees where its events
    // land and that it cannot forge live messages.
    let out = run(&as_user(&NatsUser::publisher()), &["check"]).await;
    let text = stdout(&out);
    for line in [
        "FAILED jetstream: the JetStream API is not available",
        "ok     routing: events land in HERALD_EVENTS",
        "ok     permissions: publishing to herald.live.x is refused",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    assert!(!text.contains("streams:"), "{text}");
    assert!(!text.contains("hunter") && !text.contains(&NatsUser::publisher().password));
    let out = run(&as_user(&NatsUser::edge()), &["check"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("warn   permissions: these credentials may publish"),
        "{text}"
    );
    // The publisher publishes through the CLI with its own credentials.
    let out = run(
        &as_user(&NatsUser::publisher()),
        &[
            "publish",
            "--org",
            "acme",
            "--service",
            "finance",
            "--type",
            "x",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn check_fails_when_the_servers_partition_but_the_deployment_does_not() {
    let nats = NatsServer::start_partitioned(4).await;
    create_streams(&nats, 1).await;
    let out = run(
        &nats.url(),
        &[
            "publish",
            "--org",
            "acme",
            "--service",
            "finance",
            "--type",
            "x",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    let out = run(&nats.url(), &["check"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED routing: HERALD_EVENTS holds herald.events.acme.finance._."),
        "{text}"
    );
}

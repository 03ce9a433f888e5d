//! The report of `compare`: each system's figures, with its ratio to
//! Herald's where one system can be set against another.

use super::delivery::{Delivered, ON_TIME};
use super::Measured;
use crate::cli::CompareArgs;
use crate::peer::{System, Transport};
use crate::report::Report;

fn kib(v: Option<f64>) -> String {
    v.map_or_else(|| "·".into(), |v| format!("{v:.1} KiB"))
}

fn micros(v: Option<f64>) -> String {
    v.map_or_else(|| "·".into(), |v| format!("{v:.1} µs"))
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "·".into(), |v| format!("{v:.2} s"))
}

fn ratio(v: Option<f64>, herald: Option<f64>) -> String {
    match (v, herald) {
        (Some(v), Some(h)) if h > 0.0 => format!("{:.2}×", v / h),
        _ => "·".into(),
    }
}

/// `text`, and the figure with the broker's growth when it differs.
fn with_broker(text: String, server: Option<f64>, with_broker: Option<f64>) -> String {
    match (server, with_broker) {
        (Some(s), Some(b)) if (b - s).abs() > 0.05 => {
            format!("{text}; with nats-server {}", kib(Some(b)))
        }
        _ => text,
    }
}

fn quantiles(d: &Delivered) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} ms",
        d.us.value_at_quantile(0.5) as f64 / 1e3,
        d.us.value_at_quantile(0.99) as f64 / 1e3,
        d.us.max() as f64 / 1e3
    )
}

/// Server CPU per delivery (with Herald's ratio), the broker's, and the
/// load client's share of a core.
fn cpu(d: &Delivered, herald: Option<&Delivered>) -> String {
    let server = d.per_delivery_us(d.cpu_s);
    let mut text = format!(
        "server {}, {} per delivery ({} Herald's edge)",
        seconds(d.cpu_s),
        micros(server),
        ratio(server, herald.and_then(|h| h.per_delivery_us(h.cpu_s)))
    );
    if d.broker_cpu_s.is_some() {
        text.push_str(&format!(
            "; nats-server {}, {} per delivery",
            seconds(d.broker_cpu_s),
            micros(d.per_delivery_us(d.broker_cpu_s))
        ));
    }
    if let Some(c) = d.client_cpu_s {
        text.push_str(&format!(
            "; load client {:.0} % of a core",
            c / d.elapsed_s * 100.0
        ));
    }
    text
}

/// The report of every system's figures.
pub fn write(args: &CompareArgs, results: &[(System, Measured)]) -> Report {
    let title =
        args.output.title.clone().unwrap_or_else(|| {
            "Compare: Herald beside Nchan, Pushpin and NATS over WebSocket".into()
        });
    let mut r = Report::new(title);
    let herald = results
        .iter()
        .find(|(s, _)| *s == System::Herald)
        .map(|(_, m)| m);
    let herald_idle = |t: Transport| {
        herald.and_then(|m| {
            m.idle
                .iter()
                .find(|(x, _)| *x == t)
                .and_then(|(_, p)| p.server)
        })
    };
    for (system, m) in results {
        for (transport, per) in &m.idle {
            r.figure(
                &format!(
                    "{system}: memory per idle {transport} ({} over {} channels)",
                    args.idle_connections, args.idle_channels
                ),
                with_broker(
                    format!(
                        "{} ({} Herald's)",
                        kib(per.server),
                        ratio(per.server, herald_idle(*transport))
                    ),
                    per.server,
                    per.with_broker,
                ),
            );
        }
        if let Some(l) = &m.latency {
            r.figure(
                &format!(
                    "{system}: publish → receive p50 / p99 / max ({} WebSockets over {} channels, {} ev/s for {} s)",
                    l.load.connections, l.load.channels, l.load.rate, l.load.duration
                ),
                quantiles(l),
            );
            r.figure(
                &format!("{system}: publish answered p50 / p99 (Herald: JetStream ack)"),
                format!(
                    "{:.2} / {:.2} ms",
                    l.publish_us.value_at_quantile(0.5) as f64 / 1e3,
                    l.publish_us.value_at_quantile(0.99) as f64 / 1e3
                ),
            );
            r.figure(
                &format!("{system}: events taken; deliveries owed / received"),
                format!("{}; {} / {}", l.published, l.owed, l.received),
            );
            r.figure(
                &format!("{system}: CPU of the latency run"),
                cpu(l, herald.and_then(|h| h.latency.as_ref())),
            );
        }
        for (i, d) in m.fanout.iter().enumerate() {
            let h = herald.and_then(|h| h.fanout.get(i));
            // Over the time the publishing really took: a system that takes
            // events slower than the rate stretches it.
            let slower = if d.publishing_s > d.load.duration as f64 * 1.1 {
                format!(" (publishing took {:.1} s)", d.publishing_s)
            } else {
                String::new()
            };
            r.figure(
                &format!(
                    "{system}: fan-out, one channel of {} WebSockets, {} ev/s for {} s",
                    d.load.connections, d.load.rate, d.load.duration
                ),
                format!(
                    "{:.0} deliveries/s{slower}; {} / {} received, {:.1} % within {} s; p50 / p99 / max {}",
                    d.received as f64 / d.publishing_s.max(d.load.duration as f64),
                    d.received,
                    d.owed,
                    if d.owed > 0 {
                        d.on_time as f64 * 100.0 / d.owed as f64
                    } else {
                        0.0
                    },
                    ON_TIME.as_secs(),
                    quantiles(d)
                ),
            );
            r.figure(
                &format!("{system}: CPU of fan-out at {} ev/s", d.load.rate),
                cpu(d, h),
            );
        }
        if let Some(x) = &m.resume {
            r.figure(
                &format!(
                    "{system}: resume over {} ({} subscribers away for 10 events)",
                    x.transport, x.subscribers
                ),
                format!(
                    "missed events read on return {} of {}; later {} of {}; read twice {}{}",
                    x.missed_read,
                    x.missed_owed,
                    x.later_read,
                    x.later_owed,
                    x.repeated,
                    if x.without_id > 0 {
                        format!("; {} had no event id to return with", x.without_id)
                    } else {
                        String::new()
                    }
                ),
            );
        }
        for n in &m.notes {
            r.figure("note", n.clone());
        }
    }
    r
}

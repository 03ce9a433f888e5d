//! Subscription counts from a NATS server's HTTP monitoring endpoint:
//! `/subsz` (every subscription in the server's interest graph, including
//! the interest its routes propagated from the other servers of the
//! cluster) and `/connz?subs=1` (the subscriptions of the server's own
//! client connections, by subject).
//!
//! Live-feed subscriptions are told apart by their subject: an edge's
//! per-org interest is `herald.live.<org>.>`; the per-partition interest
//! that [`crate::standin`] stands in for is `herald.live.*.*.*.<k>` (or
//! `herald.live.>` with one partition).

use std::time::Duration;

use serde_json::Value;

use crate::error::LoadError;

/// Bound on one monitoring request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections listed per `/connz` page.
const PAGE: usize = 1024;

/// What kind of live-feed interest a subscription subject is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// `herald.live.<org>.>`: one org.
    PerOrg,
    /// `herald.live.*.*.*.<k>` or `herald.live.>`: a whole partition.
    PerPartition,
    /// Anything else (JetStream, control, inboxes, …).
    Other,
}

/// Classifies a subscription subject.
pub fn interest(subject: &str) -> Interest {
    let Some(rest) = subject.strip_prefix("herald.live.") else {
        return Interest::Other;
    };
    let tokens: Vec<&str> = rest.split('.').collect();
    match tokens.as_slice() {
        [">"] => Interest::PerPartition,
        ["*", "*", "*", k] if k.parse::<u32>().is_ok() => Interest::PerPartition,
        [org, ">"] if *org != "*" => Interest::PerOrg,
        _ => Interest::Other,
    }
}

/// The subscription counts of one server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerSubs {
    /// `/subsz` `num_subscriptions`: the whole interest graph, routed
    /// interest of the other servers included.
    pub graph: u64,
    /// Per-org live subscriptions of this server's own clients.
    pub local_per_org: u64,
    /// Per-partition live subscriptions of this server's own clients.
    pub local_per_partition: u64,
    /// Other subscriptions of this server's own clients (inboxes, control).
    pub local_other: u64,
    /// Client connections.
    pub connections: u64,
}

/// Reads the subscription counts of the server monitored at `base`.
pub async fn read(client: &reqwest::Client, base: &str) -> Result<ServerSubs, LoadError> {
    let subsz = get(client, &format!("{base}/subsz")).await?;
    let mut out = ServerSubs {
        graph: subsz["num_subscriptions"].as_u64().unwrap_or(0),
        ..ServerSubs::default()
    };
    let mut offset = 0;
    loop {
        let connz = get(
            client,
            &format!("{base}/connz?subs=1&limit={PAGE}&offset={offset}"),
        )
        .await?;
        let conns = connz["connections"].as_array().cloned().unwrap_or_default();
        count_connections(&conns, &mut out);
        offset += conns.len();
        let total = connz["total"].as_u64().unwrap_or(0) as usize;
        if conns.is_empty() || offset >= total {
            break;
        }
    }
    Ok(out)
}

/// Adds the live-feed subscriptions of `/connz` connections to `out`.
fn count_connections(conns: &[Value], out: &mut ServerSubs) {
    for c in conns {
        out.connections += 1;
        for s in c["subscriptions_list"].as_array().into_iter().flatten() {
            match interest(s.as_str().unwrap_or("")) {
                Interest::PerOrg => out.local_per_org += 1,
                Interest::PerPartition => out.local_per_partition += 1,
                Interest::Other => out.local_other += 1,
            }
        }
    }
}

/// Reads every server of `bases`, in order.
pub async fn read_all(bases: &[String]) -> Result<Vec<ServerSubs>, LoadError> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| LoadError::Setup(format!("http client: {e}")))?;
    let mut out = Vec::with_capacity(bases.len());
    for b in bases {
        out.push(read(&client, b).await?);
    }
    Ok(out)
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Value, LoadError> {
    client
        .get(url)
        .send()
        .await
        .map_err(|e| LoadError::Nats(format!("GET {url}: {e}")))?
        .json()
        .await
        .map_err(|e| LoadError::Nats(format!("GET {url}: not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_interest_kinds_apart() {
        assert_eq!(interest("herald.live.acme.>"), Interest::PerOrg);
        assert_eq!(interest("herald.live.*.*.*.3"), Interest::PerPartition);
        assert_eq!(interest("herald.live.>"), Interest::PerPartition);
        assert_eq!(interest("herald.live.*.>"), Interest::Other);
        assert_eq!(interest("herald.control.*"), Interest::Other);
        assert_eq!(interest("$JS.API.>"), Interest::Other);
        let conns = serde_json::json!([
            {"subscriptions_list": ["herald.live.a.>", "herald.live.b.>", "_HERALD_EDGE.x.*"]},
            {"subscriptions_list": ["herald.live.*.*.*.0"]},
            {}
        ]);
        let mut s = ServerSubs::default();
        count_connections(conns.as_array().expect("array"), &mut s);
        assert_eq!(
            (
                s.connections,
                s.local_per_org,
                s.local_per_partition,
                s.local_other
            ),
            (3, 2, 1, 1)
        );
    }
}

/// Growth of each server's whole interest graph (`/subsz`) from `before`
/// to `after`. Routes propagate every client subscription to every server,
/// so each server's graph grows by the live subscriptions of *all*
/// servers' clients (the sum of their `local_*` growth), plus JetStream's
/// internal subscriptions, which `/connz` does not list.
pub fn graph_growth(before: &[ServerSubs], after: &[ServerSubs]) -> Vec<i64> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| a.graph as i64 - b.graph as i64)
        .collect()
}

/// Growth of the live subscriptions of one kind (`pick`) of all servers'
/// own clients together: what routes carry into every server's graph.
pub fn cluster_live_growth(
    before: &[ServerSubs],
    after: &[ServerSubs],
    pick: impl Fn(&ServerSubs) -> u64,
) -> i64 {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| pick(a) as i64 - pick(b) as i64)
        .sum()
}

#[cfg(test)]
mod graph_tests {
    use super::*;

    #[test]
    fn growth_of_graphs_and_of_live_subscriptions() {
        let s = |graph, local_per_org| ServerSubs {
            graph,
            local_per_org,
            ..ServerSubs::default()
        };
        let before = [s(100, 0), s(100, 0)];
        let after = [s(146, 12), s(146, 18)];
        assert_eq!(graph_growth(&before, &after), vec![46, 46]);
        assert_eq!(
            cluster_live_growth(&before, &after, |s| s.local_per_org),
            30
        );
    }
}

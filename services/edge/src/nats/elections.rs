//! Leader elections of the event streams, as JetStream announces them.
//!
//! A stream's leader RePublishes every stored event over core NATS. When
//! that server dies, the messages it had sent but the servers had not yet
//! routed here are gone, and nothing on this node's own connection shows it;
//! a later event of the same org on another subject would then be trusted
//! over the gap. JetStream announces each new leader (and each lost quorum)
//! with an advisory as it is elected, seconds after the old one went silent
//! and before publishers reach the new one, so [`follow`] marks the stream's
//! [`Heads`] at once, and every org of that stream reads the stream before it
//! trusts live messages again. Advisories are core NATS too: the head
//! samples catch a change a lost advisory hides ([`Heads::set`]).

use std::sync::Arc;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::nats::head::Heads;
use crate::nats::streams::Streams;

/// The advisory subjects followed; the last token names the stream.
const ADVISORIES: [&str; 2] = [
    "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.*",
    "$JS.EVENT.ADVISORY.STREAM.QUORUM_LOST.*",
];

/// Marks the head of every stream of `streams` an advisory names, until
/// `stop`. Subscribing is retried; the client resubscribes after reconnects.
pub async fn follow(client: async_nats::Client, streams: Arc<Streams>, stop: CancellationToken) {
    let mut subs = Vec::new();
    for subject in ADVISORIES {
        loop {
            tokio::select! {
                r = client.subscribe(subject) => match r {
                    Ok(sub) => {
                        subs.push(sub);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(subject, error = %e, "cannot follow stream elections yet; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                },
                _ = stop.cancelled() => return,
            }
        }
    }
    let mut advisories = futures::stream::select_all(subs);
    loop {
        let msg = tokio::select! {
            m = advisories.next() => match m {
                Some(m) => m,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        if let Some(heads) = named(&streams, &msg.subject) {
            tracing::info!(stream = %heads.stream().name(), advisory = %msg.subject, "stream leader changed; its orgs re-read the stream");
            heads.leader_may_have_changed();
        }
    }
}

/// The head of the node's stream an advisory subject names, if any.
fn named<'a>(streams: &'a Streams, subject: &str) -> Option<&'a Arc<Heads>> {
    let stream = subject.rsplit('.').next()?;
    streams.by_name(stream)
}

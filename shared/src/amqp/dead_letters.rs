//! Archiving the dead-letter queue into Postgres, so operators inspect and replay a table
//! instead of a queue.
//!
//! Peeking at a busy queue (get, then requeue) can reorder, duplicate or — with a delivery
//! limit — drop messages. Instead each dead letter is *moved*: inserted with its headers into
//! `dead_letters` (and its item marked `dead` when the broker killed it) in one transaction,
//! and acked only after the commit. A crash between commit and ack redelivers the message; its
//! `dedupe_key` makes the second insert a no-op, so at-least-once archiving never duplicates a
//! row. Listing then reads the table, which nothing reorders.
//!
//! Two entry points: [`archive_pending`] drains what is queued now (the producer runs it
//! before every listing), [`run_archiver`] consumes for as long as a worker runs.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::headers::{self, Death};
use super::Topology;
use crate::envelope::{DeadLetterReason, PurchaseMessage};
use crate::store::dead_letters::{Archived, DeadLetterOrigin, NewDeadLetter};
use crate::store::items::ItemDeath;
use crate::store::{Cas, Store};
use crate::token::IdempotencyToken;

/// Unacked dead letters the long-running archiver holds at once. Archiving is one small
/// transaction per message; a few in flight hide the round trip without hoarding messages
/// another archiver (every worker replica runs one) could take.
const ARCHIVER_PREFETCH: u16 = 8;
/// Longest wait between attempts while Postgres refuses an archive.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What one [`archive_pending`] call did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveReport {
    /// New rows in `dead_letters`.
    pub archived: usize,
    /// Copies of dead letters archived before (acked, nothing written).
    pub duplicates: usize,
    /// Items moved `queued|running → dead` because the broker dead-lettered their message.
    pub items_dead: usize,
    /// Messages the broker said were still queued after the last get (0 once drained).
    pub remaining: u32,
}

/// A dead letter as it will be archived, and the item to end with it (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Classified {
    pub dead_letter: NewDeadLetter,
    pub item: Option<ItemDeath>,
}

/// Decides how a dead-lettered message is archived: who dead-lettered it (a worker sets
/// `x-buyonce-dead-letter-id`; the broker only adds `x-death`), why, its dedupe key, and
/// whether its item must be marked `dead`.
///
/// Only broker-originated dead letters end an item: a worker ends the item itself before it
/// dead-letters (`failed` for permanent failures, `dead` for exhausted attempts) or refuses a
/// message that is not the item's own, whereas the broker kills a message without telling
/// Postgres, which would leave the item `queued` or `running` with no message left to buy it.
/// Reasons that are not replayable never end an item either: a malformed or tampered copy
/// says nothing about the real item.
pub fn classify(body: &[u8], properties: &BasicProperties) -> Classified {
    let table = properties.headers().as_ref();
    let deaths = headers::deaths(table);
    let decoded = PurchaseMessage::decode(body).ok();
    let worker_id = headers::text(table, headers::DEAD_LETTER_ID);
    let dead_at = headers::text(table, headers::DEAD_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));

    let (origin, reason, error, dedupe_key) = match &worker_id {
        Some(id) => {
            let raw = headers::text(table, headers::REASON).unwrap_or_default();
            let error = headers::text(table, headers::ERROR);
            let (reason, error) = match DeadLetterReason::parse(&raw) {
                Some(r) => (r, error),
                // A newer worker's reason: keep the message, say what we could not read.
                None => (
                    DeadLetterReason::Broker,
                    Some(format!(
                        "unrecognised {} {raw:?}: {}",
                        headers::REASON,
                        error.as_deref().unwrap_or("no error text")
                    )),
                ),
            };
            (
                DeadLetterOrigin::Worker,
                reason,
                error,
                format!("worker:{id}"),
            )
        }
        None => {
            let latest = deaths.first();
            let reason = match latest.map(|d| d.reason.as_str()) {
                Some("delivery_limit") => DeadLetterReason::DeliveryLimit,
                _ => DeadLetterReason::Broker,
            };
            let message_id = properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_else(|| format!("sha256:{}", hex::encode(Sha256::digest(body))));
            let key = match latest {
                Some(d) => format!("broker:{message_id}:{}:{}:{}", d.queue, d.reason, d.count),
                None => format!("broker:{message_id}:-:-:0"),
            };
            (
                DeadLetterOrigin::Broker,
                reason,
                Some(broker_error(latest)),
                key,
            )
        }
    };

    let execution_id = decoded
        .as_ref()
        .map(|m| m.execution_id.as_str().to_owned())
        .or_else(|| headers::text(table, headers::EXECUTION_ID));
    let rec_index = decoded
        .as_ref()
        .map(|m| m.rec_index.as_i32())
        .or_else(|| headers::text(table, headers::REC_INDEX).and_then(|s| s.parse().ok()));
    let service = decoded
        .as_ref()
        .map(|m| m.recommendation.service.as_str().to_owned())
        .or_else(|| headers::text(table, headers::SERVICE));
    let token = decoded.as_ref().map(|m| m.token.clone());

    let mut times: Vec<DateTime<Utc>> = deaths.iter().filter_map(|d| d.time).collect();
    times.extend(dead_at);
    let summary: Vec<String> = deaths.iter().map(describe_death).collect();

    let item = match &decoded {
        Some(msg)
            if origin == DeadLetterOrigin::Broker
                && reason.replayable()
                && msg.token == msg.expected_token() =>
        {
            Some(ItemDeath {
                execution_id: msg.execution_id.clone(),
                rec_index: msg.rec_index,
                token: msg.token.clone(),
                recommendation: msg.recommendation.clone(),
                error: error.clone().unwrap_or_else(|| reason.as_str().to_owned()),
            })
        }
        _ => None,
    };

    Classified {
        dead_letter: NewDeadLetter {
            dedupe_key,
            reason,
            origin,
            error,
            execution_id,
            rec_index,
            service,
            token,
            body: body.to_vec(),
            headers: table
                .map(headers::table_to_json)
                .unwrap_or_else(|| json!({})),
            properties: properties_json(properties),
            delivery_count: table
                .and_then(|t| t.inner().get("x-delivery-count"))
                .and_then(int),
            death_summary: (!summary.is_empty()).then(|| summary.join("; ")),
            first_death_at: times.iter().min().copied(),
            last_death_at: times.iter().max().copied(),
        },
        item,
    }
}

/// `delivery_limit x1 in buyonce.purchases`.
fn describe_death(d: &Death) -> String {
    format!("{} x{} in {}", d.reason, d.count, d.queue)
}

/// The archived error text of a broker-originated dead letter: what happened, in words.
fn broker_error(latest: Option<&Death>) -> String {
    let Some(d) = latest else {
        return "dead-lettered without buyonce reason headers or x-death (published to the \
                dead-letter exchange by something other than a buyonce worker)"
            .into();
    };
    let what = match d.reason.as_str() {
        "delivery_limit" => {
            "delivered more times than the queue's x-delivery-limit without an ack: a worker \
             kept crashing or losing its connection while handling it"
        }
        "rejected" => "rejected by a consumer without requeue",
        "expired" => "its TTL expired before a consumer took it",
        "maxlen" => "dropped because the queue was over its length limit",
        _ => "dead-lettered by the broker",
    };
    format!("{what} (x-death: {} x{} in {})", d.reason, d.count, d.queue)
}

fn int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// The AMQP properties worth keeping (headers are stored separately).
fn properties_json(p: &BasicProperties) -> Value {
    let mut map = Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            map.insert(k.to_owned(), Value::String(v));
        }
    };
    put("message_id", p.message_id().as_ref().map(|s| s.to_string()));
    put(
        "correlation_id",
        p.correlation_id().as_ref().map(|s| s.to_string()),
    );
    put(
        "content_type",
        p.content_type().as_ref().map(|s| s.to_string()),
    );
    put("type", p.kind().as_ref().map(|s| s.to_string()));
    put("app_id", p.app_id().as_ref().map(|s| s.to_string()));
    put("expiration", p.expiration().as_ref().map(|s| s.to_string()));
    put(
        "timestamp",
        p.timestamp()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t as i64, 0))
            .map(|t| t.to_rfc3339()),
    );
    if let Some(mode) = p.delivery_mode() {
        map.insert("delivery_mode".into(), json!(mode));
    }
    Value::Object(map)
}

/// Archives one message (insert + item CAS in one transaction) and, when the broker killed
/// an item's message, updates the execution's aggregate status afterwards. Returns whether a
/// new row was written and whether an item was marked dead.
async fn archive_one(
    store: &Store,
    body: &[u8],
    properties: &BasicProperties,
) -> anyhow::Result<(bool, bool)> {
    let classified = classify(body, properties);
    let dl = &classified.dead_letter;
    let archived = store
        .archive_dead_letter(dl, classified.item.as_ref())
        .await
        .context("archiving a dead letter into Postgres")?;
    let token = crate::token::mask(dl.token.as_ref().map_or("", IdempotencyToken::as_str));
    Ok(match archived {
        Archived::Duplicate { id } => {
            debug!(
                dead_letter.id = id,
                "dead letter archived before; acking the copy"
            );
            (false, false)
        }
        Archived::Inserted { id, item } => {
            info!(dead_letter.id = id, reason = %dl.reason, origin = dl.origin.as_str(),
                  execution.id = ?dl.execution_id, item.rec_index = ?dl.rec_index, %token,
                  "dead letter archived");
            match item {
                Some(Cas::Applied(execution_id)) => {
                    // Outside the archive transaction, like every item end (DESIGN §4).
                    if let Err(e) = store.finish_execution_if_done(&execution_id).await {
                        warn!(error = %e, execution.id = %execution_id, "could not update the execution's status; the reaper will");
                    }
                    (true, true)
                }
                Some(other) => {
                    debug!(dead_letter.id = id, cas = %other, "item not marked dead");
                    (true, false)
                }
                None => (true, false),
            }
        }
    })
}

/// Moves up to `max` messages from the dead-letter queue into `dead_letters`, one
/// `basic_get` at a time, acking each only after its transaction committed. Stops when the
/// queue is empty. On a database error the message in hand is returned to the queue and the
/// error is returned: nothing is lost, the next call retries.
#[tracing::instrument(skip_all, fields(queue = %topology.dead_queue(), max = max))]
pub async fn archive_pending(
    store: &Store,
    channel: &Channel,
    topology: &Topology,
    max: usize,
) -> anyhow::Result<ArchiveReport> {
    let queue = topology.dead_queue();
    let mut report = ArchiveReport::default();
    let mut taken = 0;
    while taken < max {
        let got = channel
            // Manual ack: the message leaves the queue only once it is safe in Postgres.
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| anyhow::anyhow!("reading {queue}: {}", super::describe_error(&e)))?;
        let Some(got) = got else {
            report.remaining = 0;
            break;
        };
        taken += 1;
        report.remaining = got.message_count;
        let delivery = got.delivery;
        match archive_one(store, &delivery.data, &delivery.properties).await {
            Ok((inserted, item_dead)) => {
                if inserted {
                    report.archived += 1;
                } else {
                    report.duplicates += 1;
                }
                report.items_dead += usize::from(item_dead);
            }
            Err(e) => {
                // Back to the queue now rather than when the channel closes.
                let _ = delivery
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return Err(e);
            }
        }
        // After the commit. If this ack is lost the copy comes back and dedupes.
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "acking an archived dead letter (it is safe in Postgres; a redelivered copy \
                     is deduplicated): {}",
                    super::describe_error(&e)
                )
            })?;
    }
    Ok(report)
}

/// Consumes the dead-letter queue on a new channel of `connection` until `shutdown`,
/// archiving each message as it arrives (see [`run_archiver_on`]). Every worker replica can
/// run one: the dedupe key makes concurrent archivers safe.
pub async fn run_archiver(
    store: Store,
    connection: &Connection,
    topology: Topology,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await.map_err(|e| {
        anyhow::anyhow!(
            "opening the dead-letter archiver's channel: {}",
            super::describe_error(&e)
        )
    })?;
    run_archiver_on(store, channel, topology, shutdown).await
}

/// [`run_archiver`] on a channel the caller opened (so the future is `'static` and can be
/// spawned). Returns `Ok` after `shutdown` (unacked messages return to the queue when the
/// channel closes), `Err` when the channel or connection is lost: reconnect and call again.
/// While Postgres refuses, the message in hand is retried with backoff and never dropped.
pub async fn run_archiver_on(
    store: Store,
    channel: Channel,
    topology: Topology,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let queue = topology.dead_queue();
    channel
        .basic_qos(ARCHIVER_PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "setting the archiver's prefetch: {}",
                super::describe_error(&e)
            )
        })?;
    let tag = format!("buyonce-archiver-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            // Manual acks: a dead letter is acked only once it is archived.
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("consuming {queue}: {}", super::describe_error(&e)))?;
    info!(%queue, prefetch = ARCHIVER_PREFETCH, "dead-letter archiver running");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(anyhow::anyhow!("dead-letter archiver: {}", super::describe_error(&e))),
                None => return Err(anyhow::anyhow!("dead-letter archiver: consumer stream ended (channel or connection closed)")),
            },
        };
        let mut backoff = Duration::from_millis(500);
        loop {
            match archive_one(&store, &delivery.data, &delivery.properties).await {
                Ok(_) => break,
                Err(e) => {
                    // Keep the message in hand and retry: dropping it would lose it.
                    error!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot archive a dead letter; retrying");
                    tokio::select! {
                        // Unacked: the broker requeues it when the channel closes.
                        _ = shutdown.cancelled() => {
                            let _ = channel.close(200, "shutdown".into()).await;
                            return Ok(());
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
            return Err(anyhow::anyhow!(
                "acking an archived dead letter (a redelivered copy is deduplicated): {}",
                super::describe_error(&e)
            ));
        }
    }
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    let _ = channel.close(200, "shutdown".into()).await;
    info!("dead-letter archiver stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    fn message_bytes() -> Vec<u8> {
        let doc = serde_json::json!({
            "v": 1, "execution_id": "exec-1", "lineage_key": "exec-1", "rec_index": 0,
            "token": "4a667998cddd36583ee6f92b4e1f9fe36aeef04b9676a2007da7c5eefc9e96c0",
            "recommendation": {"provider": "aws", "service": "ec2", "account": "123456789012",
                "region": "us-east-1", "resource_type": "m5.large", "count": 2, "term": "1y",
                "payment": "all-upfront"}
        });
        serde_json::to_vec(&doc).unwrap()
    }

    fn x_death(reason: &str, count: i64) -> AMQPValue {
        let mut entry = FieldTable::default();
        entry.insert("queue".into(), headers::long("t.purchases"));
        entry.insert("reason".into(), headers::long(reason));
        entry.insert("count".into(), AMQPValue::LongLongInt(count));
        entry.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        entry.insert("exchange".into(), headers::long("t"));
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(entry)]))
    }

    #[test]
    fn a_broker_delivery_limit_death_ends_the_item() {
        let mut h = FieldTable::default();
        h.insert("x-death".into(), x_death("delivery_limit", 1));
        let props = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_headers(h);
        let c = classify(&message_bytes(), &props);
        assert_eq!(c.dead_letter.reason, DeadLetterReason::DeliveryLimit);
        assert_eq!(c.dead_letter.origin, DeadLetterOrigin::Broker);
        assert_eq!(
            c.dead_letter.dedupe_key,
            "broker:m-1:t.purchases:delivery_limit:1"
        );
        assert_eq!(
            c.dead_letter.death_summary.as_deref(),
            Some("delivery_limit x1 in t.purchases")
        );
        assert_eq!(c.dead_letter.execution_id.as_deref(), Some("exec-1"));
        let item = c.item.expect("the item is ended");
        assert_eq!(
            (item.execution_id.as_str(), item.rec_index.get()),
            ("exec-1", 0)
        );
        assert!(item.error.contains("x-delivery-limit"), "{}", item.error);
    }

    #[test]
    fn a_worker_dead_letter_never_ends_the_item_and_dedupes_by_its_id() {
        let mut h = FieldTable::default();
        h.insert(headers::DEAD_LETTER_ID.into(), headers::long("abc"));
        h.insert(headers::REASON.into(), headers::long("max-attempts"));
        h.insert(headers::ERROR.into(), headers::long("gave up"));
        h.insert(
            headers::DEAD_AT.into(),
            headers::long("2026-01-02T03:04:05Z"),
        );
        // A message that waited in a retry queue carries an older x-death too.
        h.insert("x-death".into(), x_death("expired", 3));
        let c = classify(
            &message_bytes(),
            &BasicProperties::default().with_headers(h),
        );
        assert_eq!(c.dead_letter.reason, DeadLetterReason::MaxAttempts);
        assert_eq!(c.dead_letter.origin, DeadLetterOrigin::Worker);
        assert_eq!(c.dead_letter.dedupe_key, "worker:abc");
        assert_eq!(c.dead_letter.error.as_deref(), Some("gave up"));
        assert_eq!(
            c.dead_letter.last_death_at.unwrap().to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        assert!(c.item.is_none());
    }

    #[test]
    fn an_undecodable_body_is_kept_raw_without_an_item() {
        let mut h = FieldTable::default();
        h.insert("x-death".into(), x_death("rejected", 1));
        h.insert(headers::EXECUTION_ID.into(), headers::long("exec-9"));
        h.insert(
            "x-delivery-count".into(),
            AMQPValue::LongString(LongString::from("x")),
        );
        let body = b"\x00\x1b[31mnot json".to_vec();
        let c = classify(&body, &BasicProperties::default().with_headers(h));
        assert_eq!(c.dead_letter.reason, DeadLetterReason::Broker);
        assert_eq!(c.dead_letter.body, body);
        assert_eq!(c.dead_letter.execution_id.as_deref(), Some("exec-9"));
        assert!(c.dead_letter.token.is_none());
        assert!(c.dead_letter.delivery_count.is_none());
        assert!(c.dead_letter.dedupe_key.starts_with("broker:sha256:"));
        assert!(c.item.is_none());
    }
}

//! A publisher that waits for the broker's confirm on every message and treats an unroutable
//! message as an error (`mandatory`): "published" means "stored in a queue", nothing less.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection};

use super::headers;
use super::topology::{Topology, PURCHASE_ROUTING_KEY};
use crate::envelope::PurchaseMessage;

/// Why a publish did not end in a confirmed, routed message.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `mandatory` publish with no queue bound for the routing key.
    #[error("unroutable: no queue bound to exchange {exchange:?} with routing key {routing_key:?} ({reply})")]
    Unroutable {
        exchange: String,
        routing_key: String,
        reply: String,
    },
    /// The broker refused to store it (e.g. queue full with overflow=reject-publish).
    #[error("broker nacked the message on exchange {exchange:?}")]
    Nacked { exchange: String },
    #[error("publishing failed: {0}")]
    Broker(String),
}

/// A confirm-mode channel plus the topology's names. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    pub async fn new(conn: &Connection, topology: Topology) -> anyhow::Result<Self> {
        let channel = conn.create_channel().await.map_err(|e| {
            anyhow::anyhow!("opening a publish channel: {}", super::describe_error(&e))
        })?;
        // Confirms: a message counts as published only once the broker has stored it.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| {
                anyhow::anyhow!("enabling publisher confirms: {}", super::describe_error(&e))
            })?;
        Ok(Self { channel, topology })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes one message and waits for its confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                // Mandatory: an unroutable message comes back instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await
            .map_err(|e| PublishError::Broker(super::describe_error(&e)))?;
        let confirmation = confirm
            .await
            .map_err(|e| PublishError::Broker(super::describe_error(&e)))?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(PublishError::Unroutable {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply: returned.reply_text.as_str().to_owned(),
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked {
                exchange: exchange.to_owned(),
            }),
            Confirmation::NotRequested => Err(PublishError::Broker(
                "channel is not in confirm mode".into(),
            )),
        }
    }

    /// Publishes a purchase message to the work queue.
    pub async fn publish_purchase(&self, msg: &PurchaseMessage) -> Result<(), PublishError> {
        self.publish(
            &self.topology.work_exchange(),
            PURCHASE_ROUTING_KEY,
            &msg.to_bytes(),
            purchase_properties(msg),
        )
        .await
    }

    /// Publishes many purchase messages, pipelined (all sent, then all confirms awaited).
    /// Results are in input order.
    pub async fn publish_purchases(
        &self,
        msgs: &[PurchaseMessage],
    ) -> Vec<Result<(), PublishError>> {
        let futures = msgs.iter().map(|m| self.publish_purchase(m));
        futures::future::join_all(futures).await
    }

    /// Parks a message in retry wait queue `level` for about `delay`; the broker returns it to
    /// the work queue when its TTL expires.
    pub async fn publish_retry(
        &self,
        body: &[u8],
        properties: BasicProperties,
        level: usize,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let ttl_ms = delay.as_millis().max(1).to_string();
        self.publish(
            &self.topology.retry_exchange(),
            &self.topology.retry_level_name(level),
            body,
            properties.with_expiration(ttl_ms.as_str().into()),
        )
        .await
    }

    /// Sends a message to the dead-letter exchange with its reason headers.
    pub async fn publish_dead(
        &self,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.publish(&self.topology.dead_exchange(), "", body, properties)
            .await
    }
}

/// AMQP properties of a purchase message.
pub fn purchase_properties(msg: &PurchaseMessage) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert(
        headers::EXECUTION_ID.into(),
        headers::long(msg.execution_id.as_str()),
    );
    h.insert(
        headers::REC_INDEX.into(),
        headers::long(&msg.rec_index.to_string()),
    );
    h.insert(
        headers::SERVICE.into(),
        headers::long(msg.recommendation.service.as_str()),
    );
    h.insert(
        headers::TOKEN_MASKED.into(),
        headers::long(&msg.token.mask()),
    );
    BasicProperties::default()
        // Persistent: survives a broker restart (quorum queues persist anyway; be explicit).
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_type("buyonce.purchase.v1".into())
        .with_app_id("buyonce".into())
        .with_message_id(uuid::Uuid::new_v4().to_string().as_str().into())
        .with_timestamp(chrono::Utc::now().timestamp() as u64)
        .with_headers(h)
}

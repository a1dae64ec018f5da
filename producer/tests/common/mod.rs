//! Test helpers: each test gets its own Postgres schema and its own queue prefix.
#![allow(dead_code)]

use buyonce_shared::amqp::headers;
use buyonce_shared::amqp::publisher::purchase_properties;
use buyonce_shared::envelope::PurchaseMessage;
use buyonce_shared::store::Store;
use buyonce_shared::testing::{TestBroker, TestDb};
use buyonce_shared::DeadLetterReason;
use buyonce_shared::{ExecutionDocument, ExecutionId, RecIndex};
use lapin::options::BasicGetOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::{json, Value};

pub struct Harness {
    pub db: TestDb,
    pub broker: TestBroker,
}

impl Harness {
    pub async fn new() -> Self {
        // Small pool: every parallel test shares the server's 100 connections.
        Self::with_pool(3).await
    }

    pub async fn with_pool(pool_size: usize) -> Self {
        buyonce_shared::tls::install_crypto_provider();
        Self {
            db: TestDb::new(pool_size).await.expect("test database"),
            broker: TestBroker::new().await.expect("test broker"),
        }
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    /// Takes every message waiting in the purchases queue, decoded.
    pub async fn drain(&self) -> Vec<PurchaseMessage> {
        let channel = self.broker.connection.create_channel().await.unwrap();
        let queue = self.broker.topology.purchases_queue();
        let mut out = Vec::new();
        while let Some(msg) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(PurchaseMessage::decode(&msg.delivery.data).expect("a valid envelope"));
        }
        let _ = channel.close(200, "drained".into()).await;
        out
    }

    /// Runs one SQL statement in the test's schema.
    pub async fn sql(&self, statement: &str) {
        let client = self.db.store.pool().get().await.unwrap();
        client.batch_execute(statement).await.unwrap();
    }

    /// Number of rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        let client = self.db.store.pool().get().await.unwrap();
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The purchase message of a stored item, as the producer publishes it.
    pub async fn message_of(&self, execution_id: &str, rec_index: i32) -> PurchaseMessage {
        let (item, lineage) = self
            .store()
            .item_with_lineage(
                &ExecutionId::parse(execution_id).unwrap(),
                RecIndex::new(rec_index as u32).unwrap(),
            )
            .await
            .unwrap()
            .expect("the item exists");
        item.to_message(&lineage).unwrap()
    }

    /// Dead-letters `body` the way a worker does (`worker::consumer::apply`): the original
    /// properties plus the reason headers, to the dead-letter exchange. Returns the
    /// dead-letter ID it put in `x-buyonce-dead-letter-id`.
    pub async fn dead_letter_as_worker(
        &self,
        body: &[u8],
        original: BasicProperties,
        reason: DeadLetterReason,
        error: &str,
        dead_letter_id: Option<String>,
    ) -> String {
        let id = dead_letter_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut table = original.headers().clone().unwrap_or_default();
        for (k, v) in [
            (headers::REASON, reason.as_str().to_owned()),
            (headers::ERROR, error.to_owned()),
            (headers::DEAD_LETTER_ID, id.clone()),
            (headers::DEAD_AT, chrono::Utc::now().to_rfc3339()),
        ] {
            table.insert(k.into(), headers::long(&v));
        }
        self.broker
            .publisher
            .publish_dead(body, original.with_headers(table))
            .await
            .expect("dead letter published");
        id
    }

    /// Dead-letters the item's own message as a worker would.
    pub async fn dead_letter_item(
        &self,
        execution_id: &str,
        rec_index: i32,
        reason: DeadLetterReason,
        error: &str,
    ) -> String {
        let msg = self.message_of(execution_id, rec_index).await;
        self.dead_letter_as_worker(
            &msg.to_bytes(),
            purchase_properties(&msg),
            reason,
            error,
            None,
        )
        .await
    }

    /// Dead-letters bytes that are not a purchase message, as a worker refusing them would.
    pub async fn dead_letter_garbage(&self, body: &[u8], reason: DeadLetterReason) -> String {
        let props = BasicProperties::default().with_headers(FieldTable::default());
        self.dead_letter_as_worker(body, props, reason, "refused", None)
            .await
    }

    pub async fn dead_queue_len(&self) -> u32 {
        self.broker
            .queue_len(&self.broker.topology.dead_queue())
            .await
            .unwrap()
    }

    pub async fn cleanup(self) {
        self.db.cleanup().await.unwrap();
        self.broker.cleanup().await.unwrap();
    }
}

/// An execution document with `n` recommendations of different services, as JSON.
pub fn document_json(id: &str, n: usize) -> Value {
    let templates = [
        json!({"provider": "aws", "service": "ec2", "account": "123456789012", "region": "us-east-1",
               "resource_type": "m5.large", "count": 2, "term": "1y", "payment": "all-upfront"}),
        json!({"provider": "aws", "service": "rds", "account": "123456789012", "region": "eu-west-1",
               "resource_type": "db.r6g.large", "engine": "postgresql", "count": 1, "term": "1y",
               "payment": "partial-upfront"}),
        json!({"provider": "azure", "service": "vm", "account": "3f2b8c1e-5a4d-4e7f-9b06-1c2d3e4f5a6b",
               "region": "westeurope", "resource_type": "Standard_D2s_v5", "count": 3, "term": "1y",
               "payment": "upfront"}),
        json!({"provider": "aws", "service": "savings-plans", "account": "210987654321",
               "plan_type": "compute", "term": "3y", "payment": "no-upfront",
               "commitment_usd_per_hour": 1.25}),
    ];
    let recs: Vec<Value> = (0..n)
        .map(|i| templates[i % templates.len()].clone())
        .collect();
    json!({
        "execution_id": id, "approved_by": "finops@example.com", "source": "producer-tests",
        "recommendations": recs
    })
}

pub fn document(id: &str, n: usize) -> ExecutionDocument {
    ExecutionDocument::from_json(&serde_json::to_vec(&document_json(id, n)).unwrap()).unwrap()
}

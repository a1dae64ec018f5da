//! Topology and publisher against the real RabbitMQ, each test under its own prefix.

use std::time::Duration;

use buyonce_shared::amqp::{PublishError, Topology};
use buyonce_shared::testing::TestBroker;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

#[tokio::test]
async fn topology_declaration_is_idempotent() {
    let broker = TestBroker::new().await.unwrap();
    broker.topology.declare(&broker.connection).await.unwrap();
    broker.topology.declare(&broker.connection).await.unwrap();
    broker.cleanup().await.unwrap();
}

/// A buyonce before the dead-letter queue's delivery limit declared that queue without one; a
/// queue's arguments cannot change, so the declaration keeps it (and warns) instead of refusing
/// to start, and declares everything else.
#[tokio::test]
async fn a_dead_letter_queue_declared_without_a_delivery_limit_is_kept() {
    let prefix = buyonce_shared::testing::unique_name("t").replace('_', "-");
    let topology = Topology::new(prefix, 20, vec![Duration::from_millis(200)]);
    let config = buyonce_shared::config::AmqpConfig::new(buyonce_shared::testing::amqp_url());
    let connection = buyonce_shared::amqp::connect(&config, "legacy-dead-queue")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut legacy = FieldTable::default();
    legacy.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            topology.dead_queue().as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            legacy,
        )
        .await
        .unwrap();
    topology.declare(&connection).await.unwrap();
    topology.declare(&connection).await.unwrap();
    for queue in [
        topology.dead_queue(),
        topology.purchases_queue(),
        topology.retry_queue(0),
    ] {
        buyonce_shared::amqp::queue_len(&connection, &queue)
            .await
            .unwrap_or_else(|e| panic!("{queue} declared: {e}"));
    }
    let broker = TestBroker {
        publisher: buyonce_shared::amqp::Publisher::new(&connection, topology.clone())
            .await
            .unwrap(),
        config,
        connection,
        topology,
    };
    broker.cleanup().await.unwrap();
}

#[tokio::test]
async fn redeclaring_with_other_arguments_is_a_clear_error() {
    let broker = TestBroker::new().await.unwrap();
    let mut other = broker.topology.clone();
    other.delivery_limit = 3;
    let err = other
        .declare(&broker.connection)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&broker.topology.purchases_queue()), "{err}");
    assert!(err.contains("BUYONCE_DELIVERY_LIMIT"), "{err}");
    broker.cleanup().await.unwrap();
}

#[tokio::test]
async fn publishing_to_an_unbound_routing_key_is_reported() {
    let broker = TestBroker::new().await.unwrap();
    let err = broker
        .publisher
        .publish(
            &broker.topology.work_exchange(),
            "no-such-key",
            b"{}",
            BasicProperties::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Unroutable { .. }), "{err}");
    // The bound key works, and the message is in the queue.
    broker
        .publisher
        .publish(
            &broker.topology.work_exchange(),
            buyonce_shared::amqp::topology::PURCHASE_ROUTING_KEY,
            b"{}",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        broker
            .queue_len(&broker.topology.purchases_queue())
            .await
            .unwrap(),
        1
    );
    broker.cleanup().await.unwrap();
}

#[tokio::test]
async fn retry_queue_returns_the_message_after_its_ttl() {
    let broker = TestBroker::with_delays(vec![Duration::from_millis(300)])
        .await
        .unwrap();
    let t: &Topology = &broker.topology;
    broker
        .publisher
        .publish_retry(
            b"{\"x\":1}",
            BasicProperties::default(),
            0,
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(broker.queue_len(&t.retry_queue(0)).await.unwrap(), 1);
    let mut waited = Duration::ZERO;
    while broker.queue_len(&t.purchases_queue()).await.unwrap() == 0 {
        assert!(
            waited < Duration::from_secs(10),
            "message never came back from the wait queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    assert_eq!(broker.queue_len(&t.retry_queue(0)).await.unwrap(), 0);
    broker.cleanup().await.unwrap();
}

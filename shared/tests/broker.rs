//! Topology and publisher against the real RabbitMQ, each test under its own prefix.

use std::time::Duration;

use buyonce_shared::amqp::{PublishError, Topology};
use buyonce_shared::testing::TestBroker;
use lapin::BasicProperties;

#[tokio::test]
async fn topology_declaration_is_idempotent() {
    let broker = TestBroker::new().await.unwrap();
    let channel = broker.connection.create_channel().await.unwrap();
    broker.topology.declare(&channel).await.unwrap();
    broker.topology.declare(&channel).await.unwrap();
    broker.cleanup().await.unwrap();
}

#[tokio::test]
async fn redeclaring_with_other_arguments_is_a_clear_error() {
    let broker = TestBroker::new().await.unwrap();
    let channel = broker.connection.create_channel().await.unwrap();
    let mut other = broker.topology.clone();
    other.delivery_limit = 3;
    let err = other.declare(&channel).await.unwrap_err().to_string();
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

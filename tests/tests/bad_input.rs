//! Bad input, published straight to the work queue of a running worker and posted to the
//! producer's HTTP API: every case is refused with the right reason, nothing reaches a provider,
//! nothing crashes, and the fleet keeps working.

use std::sync::Arc;
use std::time::Duration;

use buyonce_producer::api::App;
use buyonce_producer::broker::BrokerLink;
use buyonce_producer::metrics::Metrics;
use buyonce_producer::serve::serve;
use buyonce_producer::ApiTokens;
use buyonce_shared::amqp::topology::PURCHASE_ROUTING_KEY;
use buyonce_shared::envelope::MAX_MESSAGE_BYTES;
use buyonce_shared::store::dead_letters::DeadLetterFilter;
use buyonce_shared::{IdempotencyToken, PurchaseMessage};
use buyonce_tests::harness::{
    execution, purchase_op, recommendation, total_calls, wait_for, World,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

async fn publish(world: &World, body: &[u8], props: BasicProperties) {
    world
        .publisher()
        .publish(
            &world.broker.topology.work_exchange(),
            PURCHASE_ROUTING_KEY,
            body,
            props,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn every_bad_message_is_dead_lettered_with_its_reason_and_the_worker_keeps_buying() {
    let world = World::new().await;
    let shutdown = CancellationToken::new();
    let worker = world.start_worker(shutdown.clone()).await;

    let good = world
        .submit(&execution("exec-good", vec![recommendation("rds")]))
        .await
        .remove(0);
    let odd_headers = world
        .submit(&execution(
            "exec-odd-headers",
            vec![recommendation("memorydb")],
        ))
        .await
        .remove(0);
    let cancelled = world
        .submit(&execution("exec-cancel", vec![recommendation("ec2")]))
        .await
        .remove(0);
    buyonce_producer::cancel::cancel(world.store(), &cancelled.execution_id, "test")
        .await
        .unwrap();

    let json = serde_json::to_value(&good).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let mut forged: PurchaseMessage = good.clone();
    forged.token = IdempotencyToken::derive("attacker", 0);
    let mut tampered = good.clone();
    tampered.recommendation.count = Some(100);
    let mut unknown = good.clone();
    unknown.execution_id = buyonce_shared::ExecutionId::parse("exec-nobody").unwrap();
    unknown.lineage_key = buyonce_shared::LineageKey::parse("exec-nobody").unwrap();
    unknown.token = unknown.expected_token();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"v\": 1, oops".to_vec()),
        ("malformed", b"{\"hello\": \"world\"}".to_vec()),
        ("unsupported-version", with(&|v| v["v"] = 99.into())),
        (
            "malformed",
            with(&|v| {
                v.as_object_mut().unwrap().remove("token");
            }),
        ),
        ("token-mismatch", forged.to_bytes()),
        ("recommendation-mismatch", tampered.to_bytes()),
        (
            "unknown-service",
            with(&|v| v["recommendation"]["service"] = "mainframe".into()),
        ),
        ("unknown-item", unknown.to_bytes()),
        ("oversize", {
            let mut big = b"{\"padding\": \"".to_vec();
            big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
            big.extend(b"\"}");
            big
        }),
        ("oversize", vec![b'a'; MAX_MESSAGE_BYTES + 1]),
        ("malformed", vec![0xc3, 0x28, 0xa0, 0xa1]),
    ];
    for (_, body) in &cases {
        publish(&world, body, BasicProperties::default()).await;
    }
    // A valid message whose headers are of every wrong type: headers are not trusted, the body is.
    let mut h = FieldTable::default();
    h.insert("x-buyonce-execution-id".into(), AMQPValue::LongLongInt(42));
    h.insert(
        "x-buyonce-rec-index".into(),
        AMQPValue::FieldTable(FieldTable::default()),
    );
    h.insert("x-buyonce-service".into(), AMQPValue::Boolean(true));
    h.insert(
        "x-death".into(),
        AMQPValue::LongString("not an array".into()),
    );
    publish(
        &world,
        &odd_headers.to_bytes(),
        BasicProperties::default().with_headers(h),
    )
    .await;
    // The cancelled execution's message is acked and ignored, not dead-lettered.
    publish(&world, &cancelled.to_bytes(), BasicProperties::default()).await;
    // And the good one still buys.
    publish(&world, &good.to_bytes(), BasicProperties::default()).await;

    wait_for(
        Duration::from_secs(60),
        "every bad message archived and the good ones bought",
        || async {
            let archived = world
                .store()
                .dead_letters(&DeadLetterFilter::default())
                .await
                .unwrap();
            let good_done = world.item(&good).await.status.as_str() == "succeeded";
            let odd_done = world.item(&odd_headers).await.status.as_str() == "succeeded";
            (archived.len() == cases.len() && good_done && odd_done).then_some(archived)
        },
    )
    .await;
    let archived = world
        .store()
        .dead_letters(&DeadLetterFilter::default())
        .await
        .unwrap();
    for (reason, body) in &cases {
        let row = archived
            .iter()
            .find(|r| &r.body == body)
            .unwrap_or_else(|| panic!("no dead letter for a {reason} case"));
        assert_eq!(row.reason.as_str(), *reason, "error: {:?}", row.error);
        assert!(row.error.as_deref().is_some_and(|e| !e.is_empty()));
    }
    // Nothing bad reached a provider: exactly the two good purchases.
    assert_eq!(world.fc.call_count(purchase_op("rds")), 1);
    assert_eq!(world.fc.call_count(purchase_op("memorydb")), 1);
    assert_eq!(
        world.fc.call_count(purchase_op("ec2")),
        0,
        "the cancelled item was not bought"
    );
    assert_eq!(world.fc.ledger().len(), 2);
    assert_eq!(world.item(&cancelled).await.status.as_str(), "cancelled");
    // The approved item the tampered and forged copies pointed at was bought once, unharmed.
    assert_eq!(world.item(&good).await.attempts, 1);
    let _ = total_calls(&world.fc);
    shutdown.cancel();
    worker.handle.await.unwrap().unwrap();
    world.cleanup().await;
}

#[tokio::test]
async fn the_http_api_answers_bad_bodies_with_4xx_naming_the_field_never_5xx() {
    let world = World::new().await;
    let broker = Arc::new(
        BrokerLink::connect(world.broker.config.clone(), world.broker.topology.clone())
            .await
            .unwrap(),
    );
    let app = App {
        store: world.store().clone(),
        broker,
        metrics: Arc::new(Metrics::new()),
        tokens: ApiTokens::none(),
        daily_budget_usd: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        app,
        Duration::from_secs(3600),
        Duration::from_secs(30),
        buyonce_shared::http_server::HttpLimits::api(buyonce_shared::document::MAX_DOCUMENT_BYTES),
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let valid = serde_json::json!({
        "execution_id": "exec-http", "approved_by": "a@b.c", "source": "t",
        "recommendations": [recommendation("ec2")]
    });
    let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = valid.clone();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("not JSON", b"{{{".to_vec(), None),
        ("an array", b"[]".to_vec(), None),
        ("non-UTF-8", vec![0xff, 0xfe, 0xfd], None),
        ("empty body", Vec::new(), None),
        (
            "unknown field",
            mutate(&|v| v["recommendations"][0]["colour"] = "red".into()),
            Some("recommendations[0].colour"),
        ),
        (
            "wrong type",
            mutate(&|v| v["recommendations"][0]["count"] = "two".into()),
            Some("recommendations[0].count"),
        ),
        (
            "count 0",
            mutate(&|v| v["recommendations"][0]["count"] = 0.into()),
            Some("recommendations[0].count"),
        ),
        (
            "negative count",
            mutate(&|v| v["recommendations"][0]["count"] = (-3).into()),
            Some("recommendations[0].count"),
        ),
        (
            "bad term",
            mutate(&|v| v["recommendations"][0]["term"] = "2y".into()),
            Some("recommendations[0].term"),
        ),
        (
            "bad payment for aws",
            mutate(&|v| v["recommendations"][0]["payment"] = "monthly".into()),
            Some("recommendations[0].payment"),
        ),
        (
            "unknown service",
            mutate(&|v| v["recommendations"][0]["service"] = "lambda".into()),
            Some("recommendations[0].service"),
        ),
        (
            "empty list",
            mutate(&|v| v["recommendations"] = serde_json::json!([])),
            Some("recommendations"),
        ),
        (
            "missing approver",
            mutate(&|v| {
                v.as_object_mut().unwrap().remove("approved_by");
            }),
            None,
        ),
        (
            "execution id with spaces",
            mutate(&|v| v["execution_id"] = "exec one".into()),
            Some("execution_id"),
        ),
        (
            "huge number",
            mutate(&|v| v["recommendations"][0]["count"] = serde_json::json!(1e300)),
            Some("recommendations[0].count"),
        ),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
            None,
        ),
    ];
    for (what, body, path) in cases {
        let resp = client
            .post(format!("{base}/v1/executions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_client_error(), "{what}: HTTP {status}: {text}");
        if let Some(path) = path {
            assert!(
                text.contains(path),
                "{what}: the error must name {path}: {text}"
            );
        }
    }
    let too_big = vec![b' '; buyonce_shared::document::MAX_DOCUMENT_BYTES + 10];
    let resp = client
        .post(format!("{base}/v1/executions"))
        .header("content-type", "application/json")
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    // Nothing was recorded by any of them.
    assert!(world
        .store()
        .execution(&buyonce_shared::ExecutionId::parse("exec-http").unwrap())
        .await
        .unwrap()
        .is_none());
    shutdown.cancel();
    let _ = server.await;
    world.cleanup().await;
}

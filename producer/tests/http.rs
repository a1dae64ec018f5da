//! The HTTP API, served on 127.0.0.1:0 against the real Postgres and RabbitMQ.

mod common;

use std::sync::Arc;
use std::time::Duration;

use buyonce_producer::api::App;
use buyonce_producer::broker::BrokerLink;
use buyonce_producer::metrics::Metrics;
use buyonce_producer::serve::{listen_addr, serve};
use buyonce_producer::{ApiTokens, ServeConfig, ServeOverrides};
use buyonce_shared::config::{CommonConfig, Secret};
use buyonce_shared::document::MAX_DOCUMENT_BYTES;
use buyonce_shared::{DeadLetterReason, IdempotencyToken};
use common::{document_json, Harness};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const NO_ENV: [(&str, &str); 0] = [];

const TOKEN: &str = "test-token-0123456789abcdefghijklmn";

struct Server {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    broker: Arc<BrokerLink>,
}

impl Server {
    async fn start(h: &Harness, tokens: ApiTokens) -> Self {
        let broker = Arc::new(
            BrokerLink::connect(h.broker.config.clone(), h.broker.topology.clone())
                .await
                .unwrap(),
        );
        let app = App {
            store: h.store().clone(),
            broker: broker.clone(),
            metrics: Arc::new(Metrics::new()),
            tokens,
            daily_budget_usd: Some(1000.0),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            app,
            Duration::from_secs(3600),
            Duration::from_secs(30),
            buyonce_shared::http_server::HttpLimits::api(
                buyonce_shared::document::MAX_DOCUMENT_BYTES,
            ),
            shutdown.clone(),
        ));
        Self {
            base,
            client: reqwest::Client::new(),
            shutdown,
            task,
            broker,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Stops the server the way SIGTERM does, and checks it drains promptly.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within 10s of shutdown")
            .unwrap()
            .unwrap();
        self.broker.close().await;
    }
}

fn tokens() -> ApiTokens {
    ApiTokens::parse(&Secret::new(format!(
        "another-token-abcdefghijklmnopqrst,{TOKEN}"
    )))
    .unwrap()
}

#[tokio::test]
async fn the_api_requires_a_valid_bearer_token() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let doc = document_json("exec-auth", 1);

    let missing = server
        .client
        .post(server.url("/v1/executions"))
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.headers().contains_key("www-authenticate"));

    let wrong = server
        .client
        .post(server.url("/v1/executions"))
        .bearer_auth("test-token-0123456789abcdefghijklmX")
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.count("executions").await,
        0,
        "nothing recorded without auth"
    );

    let (status, _) = server.post("/v1/executions", &doc).await;
    assert_eq!(status, StatusCode::CREATED);

    let unauthenticated_get = server
        .client
        .get(server.url("/v1/executions/exec-auth"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated_get.status(), StatusCode::UNAUTHORIZED);

    // Probes and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn create_then_identical_then_conflict_then_read_back() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let doc = document_json("exec-http", 3);

    let (status, created) = server.post("/v1/executions", &doc).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["outcome"], "created");
    assert_eq!(created["published"], 3);
    assert_eq!(h.drain().await.len(), 3);

    let (status, identical) = server.post("/v1/executions", &doc).await;
    assert_eq!(status, StatusCode::OK, "{identical}");
    assert_eq!(identical["outcome"], "identical");
    assert_eq!(identical["published"], 0);
    assert!(h.drain().await.is_empty());

    let mut changed = doc.clone();
    changed["approved_by"] = "someone-else@example.com".into();
    let (status, conflict) = server.post("/v1/executions", &changed).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert!(conflict["error"]
        .as_str()
        .unwrap()
        .contains("already submitted with different content"));
    assert_eq!(conflict["differences"], json!(["approved_by"]));
    assert_eq!(h.count("purchase_items").await, 3);

    let (status, body) = server.get("/v1/executions/exec-http").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["execution"]["execution_id"], "exec-http");
    assert_eq!(view["execution"]["status"], "running");
    let items = view["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let full = IdempotencyToken::derive("exec-http", 0);
    assert_eq!(items[0]["token"], full.mask());
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[0]["attempts"], 0);
    assert!(items[0].get("commitment_id").is_some());
    assert!(
        !body.contains(full.as_str()),
        "a whole token never leaves the API"
    );

    let (status, _) = server.get("/v1/executions/exec-missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/v1/executions/bad%20id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"buyonce_producer_executions_submitted_total{outcome="created"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"buyonce_producer_executions_submitted_total{outcome="conflict"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("buyonce_producer_messages_published_total 3"),
        "{metrics}"
    );
    server.stop().await;
    h.cleanup().await;
}

/// 50 identical resubmissions and 50 same-ID-different-content submissions at once, with the
/// default pool (16): each answer is 200 or 409, nothing waits for the pool. (A resubmission
/// used to keep its connection while taking a second one: with every connection held that
/// way, all of them waited for the pool timeout and answered 503.)
#[tokio::test]
async fn concurrent_resubmissions_do_not_exhaust_the_pool() {
    let h =
        Harness::with_pool(buyonce_shared::config::DatabaseConfig::new(String::new()).pool_size)
            .await;
    let server = Arc::new(Server::start(&h, tokens()).await);
    let doc = document_json("exec-stampede", 2);
    let (status, body) = server.post("/v1/executions", &doc).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut tasks = Vec::new();
    for i in 0..100 {
        let server = server.clone();
        let mut doc = doc.clone();
        let identical = i % 2 == 0;
        if !identical {
            doc["approved_by"] = format!("someone-{i}@example.com").into();
        }
        tasks.push(tokio::spawn(async move {
            let (status, body) = server.post("/v1/executions", &doc).await;
            (identical, status, body)
        }));
    }
    let mut answers = std::collections::BTreeMap::<(bool, u16), usize>::new();
    for task in tasks {
        let (identical, status, body) = task.await.unwrap();
        let expected = if identical {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        };
        assert_eq!(status, expected, "identical={identical}: {body}");
        *answers.entry((identical, status.as_u16())).or_default() += 1;
    }
    assert_eq!(answers.values().sum::<usize>(), 100, "{answers:?}");
    assert_eq!(h.count("executions").await, 1);
    assert_eq!(h.count("purchase_items").await, 2);
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    Arc::into_inner(server)
        .expect("every request finished")
        .stop()
        .await;
    h.cleanup().await;
}

#[tokio::test]
async fn each_validation_error_names_its_field() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let base = document_json("exec-bad", 3);
    /// How to break the document, the field path the error must name, and words of the message.
    type Case = (fn(&mut Value), &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            |v| v["recommendations"][0]["count"] = 0.into(),
            "recommendations[0].count",
            "at least 1",
        ),
        (
            |v| v["recommendations"][1]["colour"] = "blue".into(),
            "recommendations[1].colour",
            "unknown field",
        ),
        (
            |v| v["recommendations"][2]["payment"] = "all-upfront".into(),
            "recommendations[2].payment",
            "upfront or monthly",
        ),
        (
            |v| v["recommendations"][0]["term"] = "5y".into(),
            "recommendations[0].term",
            "unknown variant",
        ),
        (
            |v| v["recommendations"] = json!([]),
            "recommendations",
            "at least one",
        ),
        (
            |v| v["execution_id"] = "has spaces".into(),
            "execution_id",
            "may contain only",
        ),
    ];
    for (mutate, path, message) in cases {
        let mut doc = base.clone();
        mutate(&mut doc);
        let (status, body) = server.post("/v1/executions", &doc).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        let errors = body["errors"].as_array().unwrap();
        let error = errors
            .iter()
            .find(|e| e["path"] == path)
            .unwrap_or_else(|| panic!("no error for {path} in {body}"));
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{path}: {body}"
        );
        assert!(body["error"].as_str().unwrap().contains(path), "{body}");
    }

    let not_json = server
        .client
        .post(server.url("/v1/executions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"execution_id\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h.count("executions").await, 0);
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let mut body = serde_json::to_vec(&document_json("exec-big", 1)).unwrap();
    body.resize(MAX_DOCUMENT_BYTES + 1, b' ');

    let response = server
        .client
        .post(server.url("/v1/executions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("larger than"),
        "{body}"
    );
    assert_eq!(h.count("executions").await, 0);
    // The API's own handler answered (the listener streams bodies, it does not refuse them
    // before the router), so the refusal is counted.
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"buyonce_producer_executions_submitted_total{outcome="invalid"} 1"#),
        "{metrics}"
    );
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn redrive_over_http_republishes_failed_items() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let (status, _) = server
        .post("/v1/executions", &document_json("exec-hrd", 2))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    h.drain().await;
    h.sql("UPDATE purchase_items SET status = 'failed', error = 'boom', attempts = 2 WHERE rec_index = 1")
        .await;

    let (status, body) = server
        .post("/v1/executions/exec-hrd/redrive", &Value::Null)
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["rec_index"], 1);
    assert_eq!(body["items"][0]["old_status"], "failed");
    let messages = h.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].token, IdempotencyToken::derive("exec-hrd", 1));

    let (status, _) = server
        .post("/v1/executions/exec-nope/redrive", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn pause_resume_status_cancel_and_redrive_of_cancelled_items_over_http() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;

    let (status, paused) = server
        .post("/v1/pause", &json!({ "reason": "incident 7" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["reason"], "incident 7");
    assert_eq!(paused["changed_by"], "api");
    let (status, body) = server.get("/v1/pause").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["paused"],
        true
    );
    assert!(h.store().pause_state().await.unwrap().paused);
    let (status, body) = server.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fleet: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fleet["pause"]["reason"], "incident 7");
    assert_eq!(fleet["spend"]["budget_usd"], 1000.0);
    assert_eq!(fleet["spend"]["reserved_usd"], 0.0);
    let (status, bad) = server.post("/v1/pause", &json!({ "why": "x" })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (status, resumed) = server.post("/v1/resume", &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resumed["paused"], false);
    assert!(!h.store().pause_state().await.unwrap().paused);

    let (status, _) = server
        .post("/v1/executions", &document_json("exec-hcx", 2))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    h.drain().await;
    let (status, cancelled) = server
        .post("/v1/executions/exec-hcx/cancel", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["cancelled"].as_array().unwrap().len(), 2);
    assert_eq!(
        cancelled["cancelled"][0]["token"],
        IdempotencyToken::derive("exec-hcx", 0).mask()
    );
    let (status, _) = server
        .post("/v1/executions/exec-none/cancel", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, refused) = server
        .post("/v1/executions/exec-hcx/redrive", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"]
        .as_str()
        .unwrap()
        .contains("include_cancelled=true"));
    let (status, redriven) = server
        .post(
            "/v1/executions/exec-hcx/redrive?include_cancelled=true",
            &Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{redriven}");
    assert_eq!(redriven["items"].as_array().unwrap().len(), 2);
    assert_eq!(redriven["items"][0]["old_status"], "cancelled");
    assert_eq!(h.drain().await.len(), 2);
    let (status, _) = server
        .post("/v1/executions/exec-hcx/redrive?include=1", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_replayed_over_http() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let (status, _) = server
        .post("/v1/executions", &document_json("exec-hdl", 2))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    h.drain().await;
    h.sql("UPDATE purchase_items SET status = 'dead', attempts = 8 WHERE rec_index = 1")
        .await;
    h.dead_letter_garbage(b"\xff\xfe not json", DeadLetterReason::Malformed)
        .await;
    h.dead_letter_item("exec-hdl", 1, DeadLetterReason::MaxAttempts, "gave up")
        .await;

    let unauthenticated = server
        .client
        .get(server.url("/v1/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = server.get("/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listing: Value = serde_json::from_str(&body).unwrap();
    let rows = listing["dead_letters"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["reason"], "malformed");
    assert_eq!(rows[0]["replayable"], false);
    assert_eq!(rows[1]["reason"], "max-attempts");
    assert_eq!(rows[1]["error"], "gave up");
    assert_eq!(rows[1]["execution_id"], "exec-hdl");
    assert_eq!(h.dead_queue_len().await, 0);
    let (malformed, dead) = (
        rows[0]["id"].as_i64().unwrap(),
        rows[1]["id"].as_i64().unwrap(),
    );
    let (status, body) = server.get("/v1/dead-letters?reason=max-attempts").await;
    assert_eq!(status, StatusCode::OK);
    let only: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(only["total"], 1);
    let (status, body) = server.get("/v1/dead-letters?reason=bogus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("delivery-limit"),
        "names the valid reasons: {body}"
    );

    let (status, body) = server.get(&format!("/v1/dead-letters/{dead}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(detail["envelope"]["rec_index"], 1);
    assert!(
        !body.contains(IdempotencyToken::derive("exec-hdl", 1).as_str()),
        "a whole token never leaves the API"
    );
    let (status, body) = server.get(&format!("/v1/dead-letters/{malformed}")).await;
    assert_eq!(status, StatusCode::OK);
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert!(detail["envelope"].is_null());
    assert!(detail["body"].as_str().unwrap().contains("\\xff"), "{body}");
    let (status, _) = server.get("/v1/dead-letters/424242").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, report) = server
        .post(
            "/v1/dead-letters/replay",
            &json!({ "ids": [malformed, dead] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["results"][0]["outcome"], "refused");
    assert!(report["results"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("cannot be replayed"));
    assert_eq!(report["results"][1]["outcome"], "replayed");
    let messages = h.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].token, IdempotencyToken::derive("exec-hdl", 1));

    let (status, _) = server
        .post(
            "/v1/dead-letters/replay",
            &json!({ "all": true, "reason": "malformed" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, dry) = server
        .post(
            "/v1/dead-letters/replay",
            &json!({ "reason": "max-attempts", "dry_run": true }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["selected"], 0, "already replayed: {dry}");
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn readiness_reports_database_and_broker() {
    let h = Harness::new().await;
    let server = Server::start(&h, ApiTokens::none()).await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, json!({"database": "ok", "broker": "ok"}));
    // Without tokens (loopback only) the API is open.
    let open = server
        .client
        .get(server.url("/v1/executions/exec-x"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), StatusCode::NOT_FOUND);
    server.stop().await;
    h.cleanup().await;
}

/// Without tokens, what a web page in the operator's browser can send is refused: a
/// `text/plain` or form body (no preflight needed), a foreign `Origin`, a foreign `Host`
/// (DNS rebinding). Nothing is recorded or published; the CLI's and curl's requests pass.
#[tokio::test]
async fn tokenless_mode_refuses_what_a_web_page_can_send() {
    let h = Harness::new().await;
    let server = Server::start(&h, ApiTokens::none()).await;
    let doc = document_json("exec-csrf", 1);
    let body = serde_json::to_vec(&doc).unwrap();
    let url = server.url("/v1/executions");
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let send = |content_type: Option<&'static str>, headers: Vec<(&'static str, String)>| {
        let mut request = server.client.post(&url).body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.send().await.unwrap().status() }
    };
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        assert_eq!(
            send(ct, vec![]).await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?}"
        );
    }
    let json = Some("application/json");
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        assert_eq!(
            send(json, vec![("origin", origin.to_owned())]).await,
            StatusCode::FORBIDDEN,
            "{origin}"
        );
    }
    for host in ["evil.example", format!("rebind.evil.example:{port}").leak()] {
        assert_eq!(
            send(json, vec![("host", host.to_owned())]).await,
            StatusCode::FORBIDDEN,
            "{host}"
        );
    }
    // A body-less POST from another origin (fetch with `mode: no-cors`) is refused too.
    let resume = server
        .client
        .post(server.url("/v1/resume"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resume.status(), StatusCode::FORBIDDEN);
    assert_eq!(h.count("executions").await, 0);
    assert!(h.drain().await.is_empty());

    // Loopback origins and plain clients pass.
    assert_eq!(
        send(
            Some("application/json; charset=utf-8"),
            vec![("origin", format!("http://localhost:{port}"))]
        )
        .await,
        StatusCode::CREATED
    );
    assert_eq!(
        send(json, vec![("host", format!("[::1]:{port}"))]).await,
        StatusCode::OK
    );
    server.stop().await;
    h.cleanup().await;
}

/// With tokens a browser has nothing to forge with, so `Host` and `Origin` are free (behind
/// a load balancer they are whatever it says); a body must still be JSON.
#[tokio::test]
async fn with_tokens_host_and_origin_are_not_checked_but_bodies_must_be_json() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;
    let body = serde_json::to_vec(&document_json("exec-lb", 1)).unwrap();
    let post = |ct: &'static str| {
        server
            .client
            .post(server.url("/v1/executions"))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .header("host", "buyonce.internal.example")
            .header("origin", "https://console.example")
            .body(body.clone())
            .send()
    };
    assert_eq!(
        post("text/plain").await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        post("application/json").await.unwrap().status(),
        StatusCode::CREATED
    );
    server.stop().await;
    h.cleanup().await;
}

#[tokio::test]
async fn a_non_loopback_listen_address_without_tokens_is_refused() {
    let err = listen_addr("0.0.0.0:0", &ApiTokens::none())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("refusing to serve the API on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("BUYONCE_API_TOKENS"), "{err}");
    assert!(listen_addr("0.0.0.0:0", &tokens()).await.is_ok());
    assert!(listen_addr("127.0.0.1:0", &ApiTokens::none()).await.is_ok());
    assert!(listen_addr("localhost:0", &ApiTokens::none()).await.is_ok());

    // `run` refuses before connecting to anything.
    let common = CommonConfig::from_source(&NO_ENV).unwrap();
    let config = ServeConfig::from_source(
        &NO_ENV,
        common,
        ServeOverrides {
            listen: Some("0.0.0.0:0".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let err = buyonce_producer::run(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("BUYONCE_API_TOKENS"), "{err:#}");
}

/// What reached the store or the client raw before: NUL bytes, control and bidi characters,
/// `..` as an ID, uncapped lists, and store errors with Postgres' text in them.
#[tokio::test]
async fn hostile_text_and_sizes_are_refused_at_the_boundary_and_errors_are_generic() {
    let h = Harness::new().await;
    let server = Server::start(&h, tokens()).await;

    for path in [
        "/v1/dead-letters?service=ec2%00x",
        "/v1/dead-letters?execution=exec%00",
        "/v1/executions/exec%00",
        "/v1/dead-letters?limit=100000",
        "/v1/dead-letters?limit=0",
        "/v1/dead-letters?execution=..",
        "/v1/executions/.hidden",
    ] {
        let (status, body) = server.get(path).await;
        assert!(status == StatusCode::BAD_REQUEST, "{path}: {status} {body}");
        assert!(
            !body.contains("22021") && !body.contains("invalid byte"),
            "{path}: {body}"
        );
    }

    for reason in [
        "x\u{1b}[1A\u{1b}[2K\rfleet running (not paused)".to_owned(),
        "reason\u{202E}".to_owned(),
        "nul\u{0}".to_owned(),
        "r".repeat(501),
    ] {
        let (status, body) = server.post("/v1/pause", &json!({ "reason": reason })).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["path"], "reason", "{body}");
    }
    let (status, state) = server.get("/v1/pause").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        state.contains("\"paused\":false"),
        "nothing was paused: {state}"
    );
    let (status, body) = server
        .post("/v1/pause", &json!({ "reason": "maintenance — café ✓" }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for (field, value) in [
        ("approved_by", "admin\u{202E}moc.elpmaxe@"),
        ("approved_by", "a\u{200B}b@example.com"),
        ("execution_id", ".."),
        ("execution_id", "-rf"),
    ] {
        let mut doc = document_json("exec-hostile", 1);
        doc[field] = value.into();
        let (status, body) = server.post("/v1/executions", &doc).await;
        assert!(
            status.is_client_error(),
            "{field}={value:?}: {status} {body}"
        );
        assert!(body.to_string().contains(field), "{body}");
    }

    let ids: Vec<i64> = (1..=1001).collect();
    let (status, body) = server
        .post("/v1/dead-letters/replay", &json!({ "ids": ids }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 1000"),
        "{body}"
    );

    // A store failure: generic text and a request ID, no SQL or table names.
    h.sql("DROP TABLE dead_letters CASCADE").await;
    let response = server
        .client
        .get(server.url("/v1/dead-letters"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error());
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["request_id"], request_id.as_str());
    let text = body["error"].as_str().unwrap();
    assert!(text.contains(&request_id), "{text}");
    assert!(
        !text.contains("dead_letters") && !text.contains("42P01"),
        "{text}"
    );
    server.stop().await;
    h.cleanup().await;
}

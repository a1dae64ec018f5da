//! The fleet as users run it: `docker/compose.yaml` with the images `docker/Dockerfile` builds
//! (RabbitMQ, Postgres, fakecloud, the producer, workers, the reaper), driven from outside
//! through the producer's HTTP API and fakecloud's ledger, as a user would.
//!
//! Needs Docker, compose v2 and the images: `tests/fleet/run.sh` makes them and runs this test
//! (CI does). Ignored in a plain `cargo test`, which has neither. The one change to the compose
//! file is `tests/fleet/compose.test.yaml` (a short AWS settle window).
//!
//! What it proves: every service reaches `healthy`; buyonce's containers run as UID 10001 on a
//! read-only root file system and read their secrets from files; the example execution buys
//! exactly one commitment per AWS recommendation; the workers scale to 5 and back to 2; a worker
//! stopped mid-purchase drains within its grace and a worker killed mid-purchase loses nothing
//! (its items finish on another, each bought once); no secret and no whole idempotency token
//! reaches the logs; `stop` ends every worker cleanly within the grace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use buyonce_fakecloud::{AdminClient, FaultRule, Faults};
use buyonce_shared::document::ExecutionDocument;
use buyonce_shared::IdempotencyToken;
use serde_json::{json, Value};

const PRODUCER: &str = "http://127.0.0.1:8080";
const FAKECLOUD: &str = "http://127.0.0.1:4566";
/// compose.yaml's `stop_grace_period` of the workers.
const WORKER_GRACE: Duration = Duration::from_secs(40);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A compose project of its own (`-p`), taken down with its volumes on drop.
struct Fleet {
    project: String,
}

impl Fleet {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .current_dir(repo())
            .args(["compose", "-p", &self.project, "-f", "docker/compose.yaml"])
            .args(["-f", "tests/fleet/compose.test.yaml"])
            .args(args)
            .output()
            .expect("running docker compose (is compose v2 installed? tests/fleet/run.sh)")
    }

    /// `docker compose …`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker compose {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Container IDs `docker compose ps -q <args>` lists.
    fn ids(&self, args: &[&str]) -> Vec<String> {
        self.ok(&[&["ps", "-q"], args].concat())
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Container IDs of a service, running or not.
    fn containers(&self, service: &str) -> Vec<String> {
        self.ids(&["-a", service])
    }

    fn running(&self, service: &str) -> Vec<String> {
        self.ids(&["--status", "running", service])
    }

    fn logs(&self) -> String {
        output_text(&self.compose(&["logs", "--no-color", "--no-log-prefix"]))
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- compose logs (tail) ----");
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            for line in &lines[lines.len().saturating_sub(200)..] {
                eprintln!("{line}");
            }
        }
        let _ = self.compose(&["down", "-v", "--timeout", "5"]);
    }
}

fn docker_inspect(id: &str) -> Value {
    let out = Command::new("docker")
        .args(["inspect", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "docker inspect {id}");
    let mut all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.remove(0)
}

fn container_log(id: &str) -> String {
    output_text(&Command::new("docker").args(["logs", id]).output().unwrap())
}

/// A command's stdout and stderr (a container's log is both).
fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn docker_exec(id: &str, command: &[&str]) -> Output {
    Command::new("docker")
        .args(["exec", id])
        .args(command)
        .output()
        .unwrap()
}

fn secret(name: &str) -> String {
    std::fs::read_to_string(repo().join("docker/secrets").join(name))
        .unwrap()
        .trim()
        .to_owned()
}

struct Api {
    http: reqwest::Client,
    token: String,
    fakecloud: AdminClient,
}

impl Api {
    async fn submit(&self, doc: &Value) -> Value {
        let response = self
            .http
            .post(format!("{PRODUCER}/v1/executions"))
            .bearer_auth(&self.token)
            .json(doc)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "submit: {status} {body}");
        body
    }

    async fn execution(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{PRODUCER}/v1/executions/{id}"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "GET execution {id}");
        response.json().await.unwrap()
    }

    /// Waits until no item of the execution is queued or running; its items.
    async fn settled(&self, id: &str, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let view = self.execution(id).await;
            let items = view["items"].as_array().cloned().unwrap_or_default();
            let open = items
                .iter()
                .filter(|i| !matches!(i["status"].as_str(), Some("succeeded" | "failed" | "dead")))
                .count();
            if !items.is_empty() && open == 0 {
                return items;
            }
            assert!(
                started.elapsed() < timeout,
                "execution {id} not settled after {timeout:?}: {}",
                view["counts"]
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Every succeeded item's commitment is in fakecloud's ledger exactly once, and the ledger holds
/// `expected_commitments` in all (the fleet's fakecloud sold nothing else).
async fn assert_bought_once(api: &Api, items: &[Value], expected_commitments: usize) {
    let ledger = api.fakecloud.ledger().await.unwrap();
    assert_eq!(
        ledger.len(),
        expected_commitments,
        "one commitment per succeeded recommendation: {:#?}",
        ledger
            .iter()
            .map(|c| (&c.service, &c.account, &c.commitment_id))
            .collect::<Vec<_>>()
    );
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &ledger {
        *per_id.entry(c.commitment_id.as_str()).or_default() += 1;
    }
    for item in items.iter().filter(|i| i["status"] == "succeeded") {
        let id = item["commitment_id"]
            .as_str()
            .expect("a succeeded item's commitment");
        assert_eq!(
            per_id.get(id),
            Some(&1),
            "commitment {id} bought once: {item}"
        );
    }
}

fn example() -> Value {
    serde_json::from_slice(&std::fs::read(repo().join("examples/execution.json")).unwrap()).unwrap()
}

/// An execution of `n` AWS recommendations taken round-robin from the example's (one of each
/// AWS service, two Savings Plans).
fn aws_execution(id: &str, n: usize) -> Value {
    let mut doc = example();
    let aws: Vec<Value> = doc["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["provider"] == "aws")
        .cloned()
        .collect();
    doc["execution_id"] = json!(id);
    doc["idempotency_key"] = json!(format!("{id}-key"));
    doc["recommendations"] = json!((0..n)
        .map(|i| aws[i % aws.len()].clone())
        .collect::<Vec<_>>());
    doc
}

fn tokens_of(doc: &Value) -> Vec<String> {
    let parsed = ExecutionDocument::from_json(doc.to_string().as_bytes()).unwrap();
    let key = parsed.lineage_key();
    (0..parsed.recommendations.len() as u32)
        .map(|i| {
            IdempotencyToken::derive(key.as_str(), i)
                .as_str()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs Docker, compose v2 and the images: tests/fleet/run.sh"]
async fn the_compose_fleet_buys_once_scales_survives_a_lost_worker_and_stops_cleanly() {
    let fleet = Fleet {
        project: format!(
            "buyonce-fleet-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
    };
    let started = Instant::now();
    fleet.ok(&["up", "-d", "--no-build", "--wait", "--wait-timeout", "300"]);
    eprintln!("fleet healthy in {:?}", started.elapsed());

    // What the files promise, container by container.
    let services = [
        "rabbitmq",
        "postgres",
        "fakecloud",
        "producer",
        "worker",
        "reaper",
    ];
    for service in services {
        let ids = fleet.running(service);
        assert!(!ids.is_empty(), "{service} is running");
        for id in &ids {
            let c = docker_inspect(id);
            assert_eq!(c["State"]["Health"]["Status"], "healthy", "{service} {id}");
            if matches!(service, "rabbitmq" | "postgres") {
                continue;
            }
            assert_eq!(
                c["Config"]["User"], "10001:10001",
                "{service} runs as 10001"
            );
            assert_eq!(
                c["HostConfig"]["ReadonlyRootfs"], true,
                "{service}: read-only root"
            );
            let uid = docker_exec(id, &["id", "-u"]);
            assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "10001");
            let write = docker_exec(id, &["sh", "-c", "echo x > /usr/local/bin/probe"]);
            assert!(
                !write.status.success(),
                "{service}: the root file system refuses writes"
            );
            let env = c["Config"]["Env"].to_string();
            assert!(
                !env.contains("buyonce-demo-only"),
                "{service}: no password in the environment"
            );
            if service != "fakecloud" {
                assert!(env.contains("BUYONCE_DATABASE_URL_FILE=/run/secrets/database_url"));
                assert!(env.contains("BUYONCE_AMQP_URL_FILE=/run/secrets/amqp_url"));
            }
        }
    }
    assert_eq!(
        fleet.running("worker").len(),
        3,
        "compose's 3 worker replicas"
    );

    buyonce_shared::tls::install_crypto_provider();
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        token: secret("api_tokens")
            .split(',')
            .next()
            .unwrap()
            .trim()
            .to_owned(),
        fakecloud: AdminClient::new(FAKECLOUD).unwrap(),
    };
    let mut documents = Vec::new();

    // The README's example: every AWS recommendation bought once; Azure is off in compose, so
    // its items end dead with the reason the README gives.
    let doc = example();
    let id = doc["execution_id"].as_str().unwrap().to_owned();
    api.submit(&doc).await;
    documents.push(doc.clone());
    let items = api.settled(&id, Duration::from_secs(180)).await;
    let aws = items.iter().filter(|i| i["provider"] == "aws").count();
    for item in &items {
        if item["provider"] == "aws" {
            assert_eq!(item["status"], "succeeded", "{item}");
        } else {
            assert_ne!(
                item["status"], "succeeded",
                "Azure is off in compose: {item}"
            );
            let error = item["error"].as_str().unwrap_or_default();
            assert!(error.contains("is Azure configured"), "{item}");
        }
    }
    assert_bought_once(&api, &items, aws).await;
    let mut bought = aws;
    // The same submission again buys nothing more.
    api.submit(&doc).await;
    assert_bought_once(
        &api,
        &api.settled(&id, Duration::from_secs(30)).await,
        bought,
    )
    .await;

    // Scale out and back in.
    fleet.ok(&["up", "-d", "--no-build", "--wait", "--scale", "worker=5"]);
    assert_eq!(fleet.running("worker").len(), 5);
    fleet.ok(&["up", "-d", "--no-build", "--wait", "--scale", "worker=2"]);
    assert_eq!(fleet.running("worker").len(), 2);

    // Purchases slow enough to be caught in flight: one worker is killed, the other stopped (it
    // drains within its grace); the items the killed one held finish on the others, each once
    // (a purchase it cut off mid-call is retried after the settle window, 15 s here:
    // tests/fleet/compose.test.yaml).
    api.fakecloud
        .set_faults(&Faults::rules([FaultRule::latency(
            "*",
            Duration::from_millis(700),
        )]))
        .await
        .unwrap();
    let doc = aws_execution("fleet-lost-worker", 24);
    api.submit(&doc).await;
    documents.push(doc.clone());
    // The worker to kill is one with purchases of this execution in flight (its log names
    // the execution once it works on one of its items).
    let started = Instant::now();
    let (killed, stopped) = loop {
        let workers = fleet.running("worker");
        let view = api.execution("fleet-lost-worker").await;
        let busy = workers
            .iter()
            .position(|w| container_log(w).contains("fleet-lost-worker"));
        if let (Some(at), true) = (busy, view["counts"]["running"].as_u64().unwrap_or(0) >= 2) {
            break (workers[at].clone(), workers[1 - at].clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no purchase in flight: {}",
            view["counts"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = Command::new("docker")
        .args(["kill", &killed])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stop = Instant::now();
    let out = Command::new("docker")
        .args(["stop", "-t", &WORKER_GRACE.as_secs().to_string(), &stopped])
        .output()
        .unwrap();
    assert!(out.status.success());
    let drained = stop.elapsed();
    assert_eq!(
        docker_inspect(&stopped)["State"]["ExitCode"],
        0,
        "a clean drain"
    );
    assert!(drained < WORKER_GRACE, "drained in {drained:?}");
    eprintln!("a worker stopped mid-purchase drained in {drained:?}");
    // Two workers again (compose starts the stopped ones) take over what the killed one held:
    // the broker requeues its unacked deliveries; the token guard keeps each purchase single.
    fleet.ok(&["up", "-d", "--no-build", "--wait", "--scale", "worker=2"]);
    api.fakecloud.set_faults(&Faults::default()).await.unwrap();
    let items = api
        .settled("fleet-lost-worker", Duration::from_secs(240))
        .await;
    for item in &items {
        assert_eq!(item["status"], "succeeded", "{item}");
    }
    let retried = items
        .iter()
        .filter(|i| i["attempts"].as_i64().unwrap_or(0) > 1)
        .count();
    eprintln!(
        "{retried} of {} items were attempted more than once",
        items.len()
    );
    bought += items.len();
    assert_bought_once(&api, &items, bought).await;

    // Nothing secret in any service's log.
    let logs = fleet.logs();
    for (what, value) in [
        (
            "the RabbitMQ and Postgres password",
            "buyonce-demo-only".to_owned(),
        ),
        ("the API token", api.token.clone()),
        ("the Postgres URL", secret("database_url")),
        ("the AMQP URL", secret("amqp_url")),
    ] {
        assert!(!logs.contains(&value), "{what} is in the compose logs");
    }
    for doc in &documents {
        for token in tokens_of(doc) {
            assert!(
                !logs.contains(&token),
                "a whole idempotency token is in the compose logs"
            );
        }
    }
    assert!(logs.contains("purchase"), "the logs are the services' own");

    // `stop` ends every worker within its grace, cleanly.
    let stop = Instant::now();
    fleet.ok(&["stop", "--timeout", &WORKER_GRACE.as_secs().to_string()]);
    let stopped_in = stop.elapsed();
    eprintln!("the fleet stopped in {stopped_in:?}");
    assert!(stopped_in < WORKER_GRACE, "stopped in {stopped_in:?}");
    for id in fleet.containers("worker") {
        let state = &docker_inspect(&id)["State"];
        if state["StartedAt"] != "0001-01-01T00:00:00Z" && id != killed {
            assert_eq!(state["ExitCode"], 0, "worker {id} exited cleanly: {state}");
        }
    }
}

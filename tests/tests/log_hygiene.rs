//! Issue 13: nothing secret in logs. The whole fleet runs as processes — worker, producer
//! (`enqueue`, `serve` called over HTTP with a bearer token, `status`), reaper `--once` — with
//! JSON logs at `RUST_LOG=debug`, against servers of our own whose credentials are passwords
//! made for this test. Every line any of them writes is then searched for every secret and
//! for every whole idempotency token of the submitted executions.

use std::path::Path;
use std::time::Duration;

use buyonce_fakecloud::FakeCloudConfig;
use buyonce_shared::config::{AmqpConfig, DatabaseConfig};
use buyonce_shared::IdempotencyToken;
use buyonce_tests::harness::{execution, recommendation, signal, wait_for};
use buyonce_tests::nodes::{
    find_log_event, process_env_with, spawn_binary, wait_exit, with_search_path, world_on,
    PgCluster, PgOptions, RabbitNode, RabbitOptions,
};

/// A value to search for, and what to call it when it is found.
struct Secret {
    what: String,
    value: String,
}

/// Every line of `logs` (name, text) containing a secret, as `name:line: what` (the secret
/// itself is not repeated in the report).
fn leaks(logs: &[(String, String)], secrets: &[Secret]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, text) in logs {
        for (n, line) in text.lines().enumerate() {
            for s in secrets.iter().filter(|s| line.contains(&s.value)) {
                let shown = line.replace(&s.value, &format!("<{}>", s.what));
                found.push(format!("{name}:{}: {} in {shown}", n + 1, s.what));
            }
        }
    }
    found
}

fn random(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_scan_reports_a_planted_secret_and_a_planted_token() {
    let token = IdempotencyToken::derive("exec-1", 0);
    let secrets = [
        Secret {
            what: "database password".into(),
            value: "s3cret-pw".into(),
        },
        Secret {
            what: "token exec-1:0".into(),
            value: token.as_str().into(),
        },
    ];
    let logs = vec![(
        "worker.log".to_owned(),
        format!(
            "{{\"message\":\"clean\",\"token\":\"{}\"}}\n\
             {{\"message\":\"connecting\",\"url\":\"postgres://app:s3cret-pw@db/x\"}}\n\
             {{\"message\":\"buying\",\"token\":\"{}\"}}\n",
            token.mask(),
            token.as_str()
        ),
    )];
    let found = leaks(&logs, &secrets);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("worker.log:2: database password"));
    assert!(found[1].starts_with("worker.log:3: token exec-1:0"));
    assert!(
        !found.iter().any(|f| f.contains("s3cret-pw")),
        "the report does not repeat the secret"
    );
}

#[tokio::test]
async fn no_password_api_token_azure_secret_or_whole_token_reaches_any_log_line() {
    let db_password = random("pgpw-");
    let amqp_password = random("mqpw-");
    let api_token = random("api-token-");
    let refused_token = random("wrong-token-");
    let azure_secret = random("azure-secret-");

    let (pg, rabbit) = tokio::join!(
        PgCluster::start(PgOptions {
            password_auth: true,
            ..PgOptions::default()
        }),
        RabbitNode::start(RabbitOptions {
            password: amqp_password.clone(),
            ..RabbitOptions::default()
        })
    );
    let (pg, rabbit) = (pg.unwrap(), rabbit.unwrap());
    pg.admin(&format!(
        "CREATE ROLE buyonce_app LOGIN CREATEDB PASSWORD '{db_password}'"
    ))
    .await
    .unwrap();
    let database_url = pg.url_as("buyonce_app", &db_password, "buyonce");
    let amqp_url = rabbit.amqp_url();
    assert!(database_url.contains(&db_password) && amqp_url.contains(&amqp_password));
    let world = world_on(
        DatabaseConfig::new(&database_url),
        AmqpConfig::new(&amqp_url),
        FakeCloudConfig {
            azure_client_secret: azure_secret.clone(),
            ..FakeCloudConfig::default()
        },
    )
    .await
    .expect("a world on our own servers");
    let env = process_env_with(
        &world,
        &[
            (
                "BUYONCE_DATABASE_URL",
                with_search_path(&database_url, &world.db.schema),
            ),
            ("BUYONCE_AMQP_URL", amqp_url.clone()),
            ("AZURE_CLIENT_SECRET", azure_secret.clone()),
            ("BUYONCE_API_TOKENS", api_token.clone()),
            ("BUYONCE_LOG_FORMAT", "json".into()),
            ("RUST_LOG", "debug".into()),
        ],
        &[],
    );
    let logs = tempfile::tempdir().unwrap();
    let log = |name: &str| logs.path().join(name);

    let mut worker = spawn_binary("buyonce-worker", &[], &env, &log("worker.log")).unwrap();

    // One execution through the CLI, AWS and Azure.
    let by_cli = execution(
        "exec-hygiene-cli",
        vec![
            recommendation("ec2"),
            recommendation("savings-plans"),
            recommendation("vm"),
        ],
    );
    let doc_path = logs.path().join("exec-cli.json");
    std::fs::write(&doc_path, serde_json::to_vec(&by_cli).unwrap()).unwrap();
    let doc_arg = doc_path.display().to_string();
    let mut enqueue = spawn_binary(
        "buyonce-producer",
        &["enqueue", &doc_arg],
        &env,
        &log("producer-enqueue.log"),
    )
    .unwrap();
    let status = wait_exit(&mut enqueue, Duration::from_secs(60))
        .await
        .expect("enqueue finishes");
    assert!(status.success(), "{}", read(&log("producer-enqueue.log")));

    // One execution through the API, with the bearer token; and a request with a wrong one.
    let mut serve = spawn_binary(
        "buyonce-producer",
        &["serve"],
        &env,
        &log("producer-serve.log"),
    )
    .unwrap();
    let listening = wait_for(Duration::from_secs(30), "the producer API", || async {
        find_log_event(&log("producer-serve.log"), "producer API listening")
    })
    .await;
    let api = format!("http://{}", listening["listen"].as_str().unwrap());
    let by_api = execution(
        "exec-hygiene-api",
        vec![recommendation("rds"), recommendation("sql-database")],
    );
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{api}/v1/executions"))
        .bearer_auth(&api_token)
        .json(&by_api)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let refused = http
        .get(format!("{api}/v1/executions/exec-hygiene-api"))
        .bearer_auth(&refused_token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    for doc in [&by_cli, &by_api] {
        let id = doc.execution_id.clone();
        let n = doc.recommendations.len();
        wait_for(Duration::from_secs(90), &format!("{id} bought"), || {
            let id = id.clone();
            let world = &world;
            async move {
                let items = world.store().items_of(&id).await.unwrap();
                (items
                    .iter()
                    .filter(|i| i.status.as_str() == "succeeded")
                    .count()
                    == n)
                    .then_some(())
            }
        })
        .await;
    }
    let shown = http
        .get(format!("{api}/v1/executions/exec-hygiene-api"))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    assert_eq!(world.fc.ledger().len(), 5);

    for (name, args) in [
        ("status-cli", vec!["status", "exec-hygiene-cli"]),
        ("status-api", vec!["status", "exec-hygiene-api", "--json"]),
        ("status-fleet", vec!["status"]),
    ] {
        let mut child = spawn_binary(
            "buyonce-producer",
            &args,
            &env,
            &log(&format!("producer-{name}.log")),
        )
        .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(60))
            .await
            .expect("status finishes");
        assert!(
            status.success(),
            "{name}: {}",
            read(&log(&format!("producer-{name}.log")))
        );
    }
    let mut reaper = spawn_binary("buyonce-reaper", &["--once"], &env, &log("reaper.log")).unwrap();
    let status = wait_exit(&mut reaper, Duration::from_secs(60))
        .await
        .expect("reaper --once finishes");
    assert!(status.success(), "{}", read(&log("reaper.log")));

    for child in [&mut worker, &mut serve] {
        signal(child, libc::SIGTERM);
        wait_exit(child, Duration::from_secs(30))
            .await
            .expect("exits on SIGTERM");
    }

    let mut secrets = vec![
        Secret {
            what: "database password".into(),
            value: db_password,
        },
        Secret {
            what: "AMQP password".into(),
            value: amqp_password,
        },
        Secret {
            what: "API token".into(),
            value: api_token,
        },
        Secret {
            what: "refused API token".into(),
            value: refused_token,
        },
        Secret {
            what: "Azure client secret".into(),
            value: azure_secret,
        },
    ];
    let mut masked = Vec::new();
    for doc in [&by_cli, &by_api] {
        let lineage = doc.lineage_key();
        for i in 0..doc.recommendations.len() {
            let index = u32::try_from(i).unwrap();
            let token = IdempotencyToken::derive(lineage.as_str(), index);
            masked.push(token.mask());
            secrets.push(Secret {
                what: format!("whole token {}:{i}", lineage.as_str()),
                value: token.as_str().to_owned(),
            });
        }
    }
    let written: Vec<(String, String)> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(&p),
            )
        })
        .collect();
    assert_eq!(written.len(), 7, "every process's output was kept");

    // The scan looked where secrets would be: debug lines, and the tokens' masked forms.
    let worker_log = read(&log("worker.log"));
    assert!(worker_log.contains("\"level\":\"DEBUG\""), "logs at debug");
    assert!(
        masked.iter().any(|m| worker_log.contains(m.as_str())),
        "the worker logs tokens, masked"
    );
    // At debug, one item's trace shows each provider call and how long it took, inside the
    // item's span (whose token is masked; the scan below finds any whole one).
    let purchase_call = worker_log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "close" && v["span"]["op"] == "savingsplans:CreateSavingsPlan")
        .unwrap_or_else(|| {
            let closes: Vec<&str> = worker_log.lines().filter(|l| l.contains("\"close\"")).take(5).collect();
            panic!("a closed provider_call span for the Savings Plans purchase; close events: {closes:#?}")
        });
    assert_eq!(purchase_call["span"]["name"], "provider_call");
    assert!(purchase_call["time.busy"].is_string(), "{purchase_call}");
    let item = purchase_call["spans"]
        .as_array()
        .and_then(|spans| spans.iter().find(|s| s["name"] == "item"))
        .unwrap_or_else(|| panic!("the call is inside its item's span: {purchase_call}"));
    assert!(
        masked
            .iter()
            .any(|m| item["token"].as_str() == Some(m.as_str())),
        "{item}"
    );
    let found = leaks(&written, &secrets);
    assert!(
        found.is_empty(),
        "secrets in the logs ({} lines):\n{}",
        found.len(),
        found.join("\n")
    );
    world.cleanup().await;
}

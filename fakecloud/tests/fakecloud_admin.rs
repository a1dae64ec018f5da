//! The admin API through [`AdminClient`], and the `buyonce-fakecloud` binary as a separate process.

use std::io::Write as _;
use std::process::Stdio;
use std::time::Duration;

use buyonce_fakecloud::{
    sdk, AdminClient, Catalog, FakeCloud, FakeCloudConfig, FaultRule, Faults, InjectedError,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const BINARY: &str = env!("CARGO_BIN_EXE_buyonce-fakecloud");
const EXAMPLE_CATALOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fakecloud-catalog.example.json"
);

async fn buy_a_redshift_node(endpoint: &str) -> String {
    let rs = aws_sdk_redshift::Client::new(&sdk::config(endpoint, "us-east-1"));
    let offering = rs
        .describe_reserved_node_offerings()
        .send()
        .await
        .unwrap()
        .reserved_node_offerings()[0]
        .reserved_node_offering_id
        .clone()
        .unwrap();
    rs.purchase_reserved_node_offering()
        .reserved_node_offering_id(offering)
        .send()
        .await
        .unwrap()
        .reserved_node
        .unwrap()
        .reserved_node_id
        .unwrap()
}

#[tokio::test]
async fn the_admin_client_reads_and_controls_an_in_process_fakecloud() {
    let fc = FakeCloud::start(FakeCloudConfig::default()).await.unwrap();
    let admin = AdminClient::new(fc.endpoint()).unwrap();
    let id = buy_a_redshift_node(&fc.endpoint()).await;

    let ledger = admin.ledger().await.unwrap();
    assert_eq!(ledger, fc.ledger());
    assert_eq!(ledger[0].commitment_id, id);
    let calls = admin.calls().await.unwrap();
    assert_eq!(calls.get("redshift:PurchaseReservedNodeOffering"), Some(&1));
    assert_eq!(
        calls.get("redshift:DescribeReservedNodeOfferings"),
        Some(&1)
    );
    assert_eq!(calls, fc.calls());

    let entry = admin.set_state(&id, "retired").await.unwrap();
    assert_eq!(entry.state, "retired");
    assert!(admin
        .set_state("no-such-commitment", "retired")
        .await
        .is_err());

    let faults = Faults::rules([FaultRule::error("*", InjectedError::Throttling)]);
    admin.set_faults(&faults).await.unwrap();
    assert_eq!(fc.faults().rules, faults.rules);

    assert_eq!(admin.catalog().await.unwrap(), Catalog::builtin());

    admin.reset().await.unwrap();
    assert!(fc.ledger().is_empty());
    assert!(fc.calls().is_empty());
    assert!(fc.faults().rules.is_empty());
}

/// Starts the binary on an ephemeral port and returns it with its endpoint, read from its log.
async fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--log-json"])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let endpoint = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "fakecloud listening" {
                return log["fields"]["endpoint"].as_str().unwrap().to_string();
            }
        }
        panic!("the binary exited before listening");
    })
    .await
    .expect("the binary logs its endpoint");
    // Keep draining the log so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, endpoint)
}

#[tokio::test]
async fn the_binary_serves_its_catalog_and_faults_and_stops_on_sigterm() {
    let mut faults_file = tempfile::NamedTempFile::new().unwrap();
    write!(
        faults_file,
        r#"{{"rules": [{{"operation": "rds:*", "kind": "latency", "latency_ms": 1}}]}}"#
    )
    .unwrap();
    let faults_path = faults_file.path().to_str().unwrap().to_string();
    let (mut child, endpoint) = spawn(&[
        "--seed",
        "7",
        "--faults",
        &faults_path,
        "--catalog",
        EXAMPLE_CATALOG,
    ])
    .await;

    let admin = AdminClient::new(&endpoint).unwrap();
    let faults = admin.faults().await.unwrap();
    assert_eq!((faults.seed, faults.rules.len()), (Some(7), 1));
    assert_eq!(
        admin.catalog().await.unwrap(),
        Catalog::load(std::path::Path::new(EXAMPLE_CATALOG)).unwrap()
    );

    // The example catalog's fixed offering IDs are usable as-is.
    let ec2 = aws_sdk_ec2::Client::new(&sdk::config(&endpoint, "us-east-1"));
    ec2.purchase_reserved_instances_offering()
        .reserved_instances_offering_id("11111111-1111-4111-8111-000000000001")
        .instance_count(1)
        .send()
        .await
        .expect("purchase through the separate process");
    assert_eq!(admin.ledger().await.unwrap()[0].price.upfront, 505.0);
    let west = aws_sdk_ec2::Client::new(&sdk::config(&endpoint, "us-west-2"));
    let offerings = west
        .describe_reserved_instances_offerings()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("scope")
                .values("Region")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        offerings.reserved_instances_offerings().len(),
        1,
        "the second offering is us-east-1 only"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(exit.success(), "graceful exit, got {exit:?}");
}

#[tokio::test]
async fn the_binary_documents_its_flags() {
    let output = Command::new(BINARY).arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--catalog",
        "--faults",
        "--seed",
        "--ri-activation-delay",
        "--azure-price-ttl",
        "--azure-provisioning-delay",
        "--latency",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    let output = Command::new(BINARY)
        .args(["--faults", "/no/such/file"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "a missing faults file fails fast");
}

#[tokio::test]
async fn the_realism_knobs_are_read_and_replaced_over_http() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fc = FakeCloud::start(FakeCloudConfig::default()).await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{}/_fakecloud/realism", fc.endpoint());
    let friendly: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(friendly["visibility_delay_ms"], 0);

    let response = http
        .put(&url)
        .body(r#"{"visibility_delay_ms": 1500, "opensearch_duplicate_names": true}"#)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let now = fc.realism();
    assert_eq!(now.visibility_delay, Duration::from_millis(1500));
    assert!(now.opensearch_duplicate_names);
    assert!(
        !now.azure_reput_session_timeout,
        "unnamed knobs stay friendly"
    );

    let response = http
        .put(&url)
        .body(r#"{"visibility_delay": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("visibility_delay"));
}

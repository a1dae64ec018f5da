//! fakecloud's Azure side: the client-credentials token endpoint and Microsoft.Capacity
//! reservation orders (api-version 2022-11-01), driven with reqwest as the worker's `emulator`
//! credential and ARM client do.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use buyonce_fakecloud::{
    CommitFailure, FakeCloud, FakeCloudConfig, FaultRule, Faults, InjectedError, Realism,
    AZURE_API_VERSION, DEFAULT_TENANT,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SUBSCRIPTION: &str = "8f6c1a52-7b1e-4a57-9f43-2d7a1c9e0b11";
const OTHER_SUBSCRIPTION: &str = "0b7d2c41-5e8a-4c3f-a1b2-c3d4e5f60718";

struct Azure {
    fc: FakeCloud,
    http: reqwest::Client,
    token: String,
}

fn http() -> reqwest::Client {
    // The workspace builds reqwest without a crypto provider; install ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("HTTP client")
}

async fn token_response(
    fc: &FakeCloud,
    tenant: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Response {
    http()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", fc.endpoint()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "test"),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("token endpoint answers")
}

async fn start(config: FakeCloudConfig) -> Azure {
    let fc = FakeCloud::start(config).await.expect("fakecloud starts");
    let response = token_response(
        &fc,
        DEFAULT_TENANT,
        "test",
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["access_token"]
        .as_str()
        .expect("access token")
        .to_string();
    Azure {
        fc,
        http: http(),
        token,
    }
}

fn purchase_body(
    subscription: &str,
    resource_type: &str,
    sku: &str,
    quantity: u32,
    display_name: &str,
) -> Value {
    json!({
        "sku": {"name": sku},
        "location": "westeurope",
        "properties": {
            "reservedResourceType": resource_type,
            "billingScopeId": format!("/subscriptions/{subscription}"),
            "term": "P1Y",
            "billingPlan": "Upfront",
            "quantity": quantity,
            "displayName": display_name,
            "appliedScopeType": "Shared",
            "renew": false
        }
    })
}

fn vm(quantity: u32, display_name: &str) -> Value {
    purchase_body(
        SUBSCRIPTION,
        "VirtualMachines",
        "Standard_D2s_v5",
        quantity,
        display_name,
    )
}

impl Azure {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/providers/Microsoft.Capacity{path}?api-version={AZURE_API_VERSION}",
            self.fc.endpoint()
        )
    }

    async fn get(&self, url: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn calculate(&self, body: &Value) -> Value {
        let response = self
            .http
            .post(self.url("/calculatePrice"))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn order_id(&self, body: &Value) -> String {
        self.calculate(body).await["properties"]["reservationOrderId"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn put(&self, id: &str, body: &Value) -> reqwest::Response {
        let url = self.url(&format!("/reservationOrders/{id}"));
        self.http
            .put(url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn buy(&self, body: &Value) -> String {
        let id = self.order_id(body).await;
        assert_eq!(self.put(&id, body).await.status(), StatusCode::ACCEPTED);
        id
    }

    async fn list_all(&self) -> Vec<Value> {
        let mut orders = Vec::new();
        let mut url = self.url("/reservationOrders");
        loop {
            let (status, _, body) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK);
            orders.extend(body["value"].as_array().unwrap().iter().cloned());
            match body["nextLink"].as_str() {
                Some(next) => url = next.to_string(),
                None => return orders,
            }
        }
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_token_endpoint_checks_the_client_credentials() {
    let az = start(FakeCloudConfig::default()).await;
    assert_eq!(az.token.split('.').count(), 3, "a JWT-shaped token");

    let response = token_response(
        &az.fc,
        DEFAULT_TENANT,
        "wrong",
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .starts_with("AADSTS7000215"));

    let response = token_response(
        &az.fc,
        "another-tenant",
        "test",
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = token_response(
        &az.fc,
        DEFAULT_TENANT,
        "test",
        "https://management.azure.com",
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_scope");
    assert_eq!(az.fc.call_count("azure:GetToken"), 4);
}

#[tokio::test]
async fn azure_identity_refuses_a_plain_http_authority_host() {
    let fc = FakeCloud::start(FakeCloudConfig::default()).await.unwrap();
    let mut custom = azure_core::cloud::CustomConfiguration::default();
    custom.authority_host = fc.endpoint();
    let client_options = azure_core::http::ClientOptions {
        cloud: Some(Arc::new(custom.into())),
        ..Default::default()
    };
    let options = azure_identity::ClientSecretCredentialOptions { client_options };
    let Err(error) = azure_identity::ClientSecretCredential::new(
        DEFAULT_TENANT,
        "test".into(),
        "test".into(),
        Some(options),
    ) else {
        panic!("azure_identity 1.0 refuses http authorities, hence the worker's own emulator credential");
    };
    assert!(error.to_string().contains("HTTPS"), "{error}");
}

#[tokio::test]
async fn arm_calls_need_a_valid_bearer_token_and_api_version() {
    let az = start(FakeCloudConfig::default()).await;
    let url = az.url("/reservationOrders");
    let response = az.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "AuthenticationFailed"
    );

    let response = az
        .http
        .get(&url)
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "InvalidAuthenticationToken"
    );

    let (status, _, body) = az
        .get(&format!(
            "{}/providers/Microsoft.Capacity/reservationOrders",
            az.fc.endpoint()
        ))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "MissingApiVersionParameter")
    );
    let (status, _, body) = az
        .get(&format!(
            "{}/providers/Microsoft.Capacity/reservationOrders?api-version=2017-11-01",
            az.fc.endpoint()
        ))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "InvalidApiVersionParameter")
    );
}

#[tokio::test]
async fn calculate_price_then_purchase_goes_from_creating_to_succeeded() {
    let config = FakeCloudConfig {
        azure_provisioning_delay: Duration::from_millis(500),
        ..Default::default()
    };
    let az = start(config).await;
    let body = vm(3, "buyonce-4a667998");
    let quote = az.calculate(&body).await;
    let properties = &quote["properties"];
    let order_id = properties["reservationOrderId"]
        .as_str()
        .unwrap()
        .to_string();
    let total = properties["grandTotal"].as_f64().unwrap();
    assert!(total > 0.0);
    assert_eq!(
        properties["billingCurrencyTotal"]["amount"].as_f64(),
        Some(total),
        "Upfront: all due now"
    );
    assert_eq!(properties["billingCurrencyTotal"]["currencyCode"], "USD");

    let response = az.put(&order_id, &body).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let headers = response.headers().clone();
    // The spec declares Location and Retry-After for this 202 (final-state-via: location),
    // not Azure-AsyncOperation.
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(!headers.contains_key("azure-asyncoperation"));
    assert_eq!(headers["retry-after"].to_str().unwrap(), "1");
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["name"], order_id.as_str());
    assert_eq!(order["properties"]["provisioningState"], "Creating");

    let (status, headers, _) = az.get(&location).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.contains_key("retry-after"));

    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _, final_order) = az.get(&location).await;
    assert_eq!(
        (
            status,
            final_order["properties"]["provisioningState"].as_str()
        ),
        (StatusCode::OK, Some("Succeeded"))
    );

    let (status, _, got) = az
        .get(&az.url(&format!("/reservationOrders/{order_id}")))
        .await;
    assert_eq!(status, StatusCode::OK);
    let p = &got["properties"];
    assert_eq!(p["displayName"], "buyonce-4a667998");
    assert_eq!(
        (p["term"].as_str(), p["billingPlan"].as_str()),
        (Some("P1Y"), Some("Upfront"))
    );
    assert_eq!(p["originalQuantity"], 3);
    assert!(p.get("planInformation").is_none());
    assert!(got.get("tags").is_none());
    let expanded = format!(
        "{}&$expand=schedule",
        az.url(&format!("/reservationOrders/{order_id}"))
    );
    let (_, _, got) = az.get(&expanded).await;
    assert_eq!(
        got["properties"]["planInformation"]["pricingCurrencyTotal"]["amount"].as_f64(),
        Some(total)
    );

    let ledger = az.fc.ledger();
    assert_eq!(ledger.len(), 1);
    let entry = &ledger[0];
    assert_eq!(
        (entry.provider.as_str(), entry.service.as_str()),
        ("azure", "vm")
    );
    assert_eq!(
        (entry.account.as_str(), entry.region.as_str()),
        (SUBSCRIPTION, "westeurope")
    );
    assert_eq!(entry.commitment_id, order_id);
    assert_eq!(
        entry.idempotency_handle.as_deref(),
        Some("buyonce-4a667998")
    );
    assert_eq!((entry.count, entry.state.as_str()), (3, "Succeeded"));
    assert!((entry.price.total - total).abs() < 1e-6 && (entry.price.upfront - total).abs() < 1e-6);
}

#[tokio::test]
async fn an_order_id_not_minted_by_calculate_price_is_session_timed_out() {
    let az = start(FakeCloudConfig::default()).await;
    let response = az
        .put(
            "6d9cec54-7de8-4a2b-9de7-80f5d634f2d2",
            &vm(1, "chosen-by-client"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Session timed out - Call CalculatePrice again and provide the new Reservation Order ID for purchase"
    );
    assert!(az.fc.ledger().is_empty());
}

#[tokio::test]
async fn an_expired_price_session_is_session_timed_out() {
    let az = start(FakeCloudConfig {
        azure_price_session_ttl: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let body = vm(1, "late");
    let id = az.order_id(&body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = az.put(&id, &body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Session timed out"));
    assert!(az.fc.ledger().is_empty());
}

#[tokio::test]
async fn a_second_put_of_a_purchased_id_is_already_exists() {
    let az = start(FakeCloudConfig::default()).await;
    let body = vm(1, "twice");
    let id = az.buy(&body).await;
    let response = az.put(&id, &body).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "ReservationOrderIdAlreadyExists"
    );
    assert_eq!(az.fc.ledger().len(), 1);
}

#[tokio::test]
async fn a_purchase_that_differs_from_its_quote_is_refused() {
    let az = start(FakeCloudConfig::default()).await;
    let id = az.order_id(&vm(1, "quoted")).await;
    let response = az.put(&id, &vm(5, "quoted")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(az.fc.ledger().is_empty());
    // The quote is still usable with the quoted parameters.
    assert_eq!(
        az.put(&id, &vm(1, "quoted")).await.status(),
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn invalid_purchase_requests_are_bad_requests() {
    let az = start(FakeCloudConfig::default()).await;
    let calculate = |body: Value| {
        let az = &az;
        async move {
            let response = az
                .http
                .post(az.url("/calculatePrice"))
                .bearer_auth(&az.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let mut body = vm(1, "x");
    body["properties"]["quantity"] = json!(0);
    let (status, _) = calculate(body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut body = vm(1, "x");
    body["properties"]["term"] = json!("P2Y");
    let (status, error) = calculate(body).await;
    assert_eq!(
        (status, error_code(&error)),
        (StatusCode::BAD_REQUEST, "UnsupportedReservationTerm")
    );
    let (status, _) = calculate(purchase_body(
        SUBSCRIPTION,
        "VirtualMachines",
        "Standard_Nope",
        1,
        "x",
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut body = vm(1, "x");
    body["properties"]["appliedScopeType"] = json!("Single");
    let (status, error) = calculate(body).await;
    assert_eq!(
        (status, error_code(&error)),
        (StatusCode::BAD_REQUEST, "MissingAppliedScopesForSingle")
    );
    let response = az
        .http
        .post(az.url("/calculatePrice"))
        .bearer_auth(&az.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unknown_order_is_reservation_order_not_found() {
    let az = start(FakeCloudConfig::default()).await;
    let (status, _, body) = az
        .get(&az.url("/reservationOrders/1f14354c-dc12-4c8d-8090-6f295a3a34aa"))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "ReservationOrderNotFound")
    );
}

#[tokio::test]
async fn orders_are_listed_tenant_wide_with_next_link_paging_and_every_state() {
    let az = start(FakeCloudConfig {
        azure_page_size: 2,
        azure_provisioning_delay: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let mut ids = Vec::new();
    for (i, (resource_type, sku)) in [
        ("VirtualMachines", "Standard_D2s_v5"),
        ("SqlDatabases", "SQLDB_GP_Compute_Gen5"),
        ("RedisCache", "Premium_P1"),
        ("CosmosDb", "Cosmos_DB_100_RU_S"),
        ("VirtualMachines", "Standard_B2s"),
    ]
    .into_iter()
    .enumerate()
    {
        let subscription = if i % 2 == 0 {
            SUBSCRIPTION
        } else {
            OTHER_SUBSCRIPTION
        };
        ids.push(
            az.buy(&purchase_body(
                subscription,
                resource_type,
                sku,
                1,
                &format!("order-{i}"),
            ))
            .await,
        );
    }
    az.fc.set_state(&ids[1], "Cancelled").unwrap();
    az.fc.set_state(&ids[2], "Expired").unwrap();

    let orders = az.list_all().await;
    assert_eq!(orders.len(), 5);
    let names: Vec<_> = orders
        .iter()
        .map(|o| o["properties"]["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["order-0", "order-1", "order-2", "order-3", "order-4"]
    );
    let states: Vec<_> = orders
        .iter()
        .map(|o| o["properties"]["provisioningState"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "Succeeded",
            "Cancelled",
            "Expired",
            "Succeeded",
            "Succeeded"
        ]
    );

    let services: HashSet<_> = az.fc.ledger().into_iter().map(|e| e.service).collect();
    let expected: HashSet<String> = ["vm", "sql-database", "redis-cache", "cosmos-db"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(services, expected);
    assert_eq!(
        az.fc.call_count("azure:ListReservationOrders"),
        3,
        "5 orders in pages of 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_order_id_make_one_order() {
    let az = Arc::new(start(FakeCloudConfig::default()).await);
    let body = vm(2, "race");
    let id = az.order_id(&body).await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (az, id, body) = (az.clone(), id.clone(), body.clone());
            tokio::spawn(async move { az.put(&id, &body).await.status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        1
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        9
    );
    assert_eq!(az.fc.ledger().len(), 1);
}

#[tokio::test]
async fn a_provisioning_failure_ends_in_the_chosen_failed_state() {
    let az = start(FakeCloudConfig {
        azure_provisioning_delay: Duration::ZERO,
        ..Default::default()
    })
    .await;
    az.fc
        .set_faults(Faults::rules([FaultRule::provisioning_failure(
            "azure:*",
            Some("BillingFailed"),
        )]));
    let id = az.buy(&vm(1, "declined")).await;
    let (_, _, order) = az.get(&az.url(&format!("/reservationOrders/{id}"))).await;
    assert_eq!(order["properties"]["provisioningState"], "BillingFailed");
    let (_, _, op) = az
        .get(&az.url(&format!("/reservationOrders/{id}/operationStatus")))
        .await;
    assert_eq!(
        (op["status"].as_str(), op["error"]["code"].as_str()),
        (Some("Failed"), Some("BillingError"))
    );
}

#[tokio::test]
async fn commit_then_fail_on_purchase_leaves_a_recoverable_order() {
    let az = start(FakeCloudConfig::default()).await;
    az.fc.set_faults(Faults::rules([FaultRule::commit_then_fail(
        "azure:PurchaseReservationOrder",
        CommitFailure::ServerError,
    )
    .times(1)]));
    let body = vm(1, "lost-response");
    let id = az.order_id(&body).await;
    let response = az.put(&id, &body).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    // The stored order ID finds the order; a blind retry is refused.
    let (status, _, order) = az.get(&az.url(&format!("/reservationOrders/{id}"))).await;
    assert_eq!(
        (status, order["properties"]["displayName"].as_str()),
        (StatusCode::OK, Some("lost-response"))
    );
    assert_eq!(az.put(&id, &body).await.status(), StatusCode::CONFLICT);
    assert_eq!(az.fc.ledger().len(), 1);
}

#[tokio::test]
async fn azure_throttling_is_429_with_retry_after() {
    let az = start(FakeCloudConfig::default()).await;
    az.fc.set_faults(Faults::rules([FaultRule::error(
        "azure:ListReservationOrders",
        InjectedError::Throttling,
    )]));
    let (status, headers, body) = az.get(&az.url("/reservationOrders")).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
    );
    assert_eq!(headers["retry-after"], "1");
}

#[tokio::test]
async fn tags_sent_with_a_purchase_are_not_kept() {
    let az = start(FakeCloudConfig::default()).await;
    let mut body = vm(1, "buyonce-tagged");
    body["tags"] = json!({"buyonce-idempotency-token": "tok"});
    let id = az.order_id(&body).await;
    let order: Value = az.put(&id, &body).await.json().await.unwrap();
    assert!(
        order.get("tags").is_none(),
        "2022-11-01 reservation orders have no tags"
    );
    assert!(az.fc.ledger()[0].tags.is_empty());
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let az = start(FakeCloudConfig::default()).await;
    let response = token_response(
        &az.fc,
        DEFAULT_TENANT,
        "test",
        "https://storage.azure.com/.default",
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the token endpoint mints it"
    );
    let body: Value = response.json().await.unwrap();
    let storage_token = body["access_token"].as_str().unwrap().to_string();
    let response = az
        .http
        .get(az.url("/reservationOrders"))
        .bearer_auth(&storage_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_code(&response.json().await.unwrap()),
        "InvalidAuthenticationTokenAudience"
    );
    // ARM's own audiences and fakecloud's base URL are accepted.
    for scope in [
        "https://management.core.windows.net/.default".to_string(),
        format!("{}/.default", az.fc.endpoint()),
    ] {
        let body: Value = token_response(&az.fc, DEFAULT_TENANT, "test", &scope)
            .await
            .json()
            .await
            .unwrap();
        let (status, _) = {
            let r = az
                .http
                .get(az.url("/reservationOrders"))
                .bearer_auth(body["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            (r.status(), ())
        };
        assert_eq!(status, StatusCode::OK, "{scope}");
    }
}

#[tokio::test]
async fn reserved_resource_types_outside_the_spec_enum_are_refused() {
    let az = start(FakeCloudConfig::default()).await;
    let body = purchase_body(SUBSCRIPTION, "SearchService", "Standard_S1", 1, "x");
    let response = az
        .http
        .post(az.url("/calculatePrice"))
        .bearer_auth(&az.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "InvalidRequestContent");
}

#[tokio::test]
async fn strict_names_refuse_what_arm_might_normalise() {
    let az = start(FakeCloudConfig {
        realism: Realism {
            azure_strict_names: true,
            ..Realism::friendly()
        },
        ..FakeCloudConfig::default()
    })
    .await;
    let mut spaced = vm(1, "x");
    spaced["location"] = "West Europe".into();
    let mut capital = vm(1, "x");
    capital["properties"]["billingScopeId"] = format!("/Subscriptions/{SUBSCRIPTION}").into();
    for (body, code) in [
        (spaced.clone(), "InvalidLocationId"),
        (capital.clone(), "InvalidSubscriptionId"),
    ] {
        let response = az
            .http
            .post(az.url("/calculatePrice"))
            .bearer_auth(&az.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&response.json().await.unwrap()), code);
    }
    // The friendly default normalises both, as ARM's RPC guidance asks providers to.
    let friendly = start(FakeCloudConfig::default()).await;
    friendly.calculate(&spaced).await;
    friendly.calculate(&capital).await;
}

#[tokio::test]
async fn a_monthly_quote_prices_one_instalment_and_schedules_the_whole_term() {
    let az = start(FakeCloudConfig::default()).await;
    let mut body = vm(2, "monthly");
    body["properties"]["billingPlan"] = "Monthly".into();
    let quote = az.calculate(&body).await;
    let props = &quote["properties"];
    let schedule = props["paymentSchedule"].as_array().unwrap();
    assert_eq!(schedule.len(), 12);
    let instalment = props["pricingCurrencyTotal"]["amount"].as_f64().unwrap();
    let sum: f64 = schedule
        .iter()
        .map(|p| p["pricingCurrencyTotal"]["amount"].as_f64().unwrap())
        .sum();
    assert!(
        (sum - 12.0 * instalment).abs() < 0.1,
        "{instalment} × 12 vs {sum}"
    );
    assert!((props["grandTotal"].as_f64().unwrap() - sum).abs() < 0.1);
}

#[tokio::test]
async fn strict_realism_hides_a_new_order_answers_200_while_creating_and_times_out_a_reput() {
    let az = start(FakeCloudConfig {
        azure_provisioning_delay: Duration::from_millis(300),
        realism: Realism::strict_deterministic(Duration::from_millis(400)),
        ..FakeCloudConfig::default()
    })
    .await;
    let body = vm(1, "strict");
    let id = az.order_id(&body).await;
    let response = az.put(&id, &body).await;
    // The ARM PUT pattern: 200 with a non-terminal provisioningState.
    assert_eq!(response.status(), StatusCode::OK);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["properties"]["provisioningState"], "Creating");
    // Not visible yet: GET answers 404, the list leaves it out.
    let (status, _, body_404) = az.get(&az.url(&format!("/reservationOrders/{id}"))).await;
    assert_eq!(
        (status, error_code(&body_404)),
        (StatusCode::NOT_FOUND, "ReservationOrderNotFound")
    );
    assert!(az.list_all().await.is_empty());
    // A re-PUT of the bought ID: the session timeout, not AlreadyExists.
    let response = az.put(&id, &body).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let again: Value = response.json().await.unwrap();
    assert!(again["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Session timed out"));
    assert_eq!(az.fc.ledger().len(), 1, "still one order");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _, got) = az.get(&az.url(&format!("/reservationOrders/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["properties"]["provisioningState"], "Succeeded");
    assert_eq!(az.list_all().await.len(), 1);
}

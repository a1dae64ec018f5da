//! fakecloud's Savings Plans, driven through the real `aws-sdk-savingsplans` client.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_savingsplans::error::ProvideErrorMetadata;
use aws_sdk_savingsplans::types::{
    CurrencyCode, SavingsPlanOffering, SavingsPlanOfferingFilterAttribute,
    SavingsPlanOfferingFilterElement, SavingsPlanPaymentOption, SavingsPlanState, SavingsPlanType,
};
use aws_sdk_savingsplans::Client;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig};

const ONE_YEAR: i64 = 31_536_000;
const THREE_YEARS: i64 = 94_608_000;

async fn start(config: FakeCloudConfig) -> (FakeCloud, Client) {
    let fc = FakeCloud::start(config).await.expect("fakecloud starts");
    let client = Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    (fc, client)
}

/// The lookup exactly as the worker makes it.
async fn offering(
    sp: &Client,
    plan: SavingsPlanType,
    duration: i64,
    payment: SavingsPlanPaymentOption,
) -> Vec<SavingsPlanOffering> {
    sp.describe_savings_plans_offerings()
        .plan_types(plan)
        .durations(duration)
        .payment_options(payment)
        .currencies(CurrencyCode::Usd)
        .send()
        .await
        .expect("offerings lookup succeeds")
        .search_results
        .unwrap_or_default()
}

async fn compute_offering_id(sp: &Client, payment: SavingsPlanPaymentOption) -> String {
    let found = offering(sp, SavingsPlanType::Compute, THREE_YEARS, payment).await;
    assert_eq!(found.len(), 1);
    found[0].offering_id.clone().unwrap()
}

#[tokio::test]
async fn every_compute_lookup_finds_exactly_one_offering() {
    let (_fc, sp) = start(FakeCloudConfig::default()).await;
    for duration in [ONE_YEAR, THREE_YEARS] {
        for payment in [
            SavingsPlanPaymentOption::AllUpfront,
            SavingsPlanPaymentOption::PartialUpfront,
            SavingsPlanPaymentOption::NoUpfront,
        ] {
            let found = offering(&sp, SavingsPlanType::Compute, duration, payment.clone()).await;
            assert_eq!(found.len(), 1, "{duration} {payment:?}");
            let o = &found[0];
            assert_eq!(o.plan_type, Some(SavingsPlanType::Compute));
            assert_eq!(o.duration_seconds, duration);
            assert_eq!(o.payment_option, Some(payment));
            assert_eq!(o.currency, Some(CurrencyCode::Usd));
        }
    }
}

#[tokio::test]
async fn ec2_instance_plans_are_filtered_by_region_and_family() {
    let (_fc, sp) = start(FakeCloudConfig::default()).await;
    let found = sp
        .describe_savings_plans_offerings()
        .plan_types(SavingsPlanType::Ec2Instance)
        .durations(ONE_YEAR)
        .payment_options(SavingsPlanPaymentOption::NoUpfront)
        .filters(
            SavingsPlanOfferingFilterElement::builder()
                .name(SavingsPlanOfferingFilterAttribute::Region)
                .values("eu-west-1")
                .build(),
        )
        .filters(
            SavingsPlanOfferingFilterElement::builder()
                .name(SavingsPlanOfferingFilterAttribute::InstanceFamily)
                .values("m5")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .search_results
        .unwrap_or_default();
    assert_eq!(found.len(), 1);
    let properties: Vec<_> = found[0]
        .properties()
        .iter()
        .map(|p| {
            (
                p.name.as_ref().unwrap().as_str(),
                p.value.as_deref().unwrap(),
            )
        })
        .collect();
    assert!(
        properties.contains(&("region", "eu-west-1"))
            && properties.contains(&("instanceFamily", "m5"))
    );
}

#[tokio::test]
async fn offerings_are_paged() {
    let (_fc, sp) = start(FakeCloudConfig::default()).await;
    let mut seen = HashSet::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let out = sp
            .describe_savings_plans_offerings()
            .max_results(10)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        for o in out.search_results() {
            assert!(
                seen.insert(o.offering_id.clone().unwrap()),
                "no offering twice"
            );
        }
        pages += 1;
        token = out.next_token;
        if token.is_none() {
            break;
        }
    }
    // Compute in USD, EUR and CNY (18), EC2 Instance in 3 regions × 3 families (54), SageMaker
    // (6) and Database (6).
    assert_eq!(seen.len(), 84);
    assert_eq!(pages, 9);
}

#[tokio::test]
async fn the_same_client_token_and_parameters_return_the_same_plan() {
    let config = FakeCloudConfig {
        ri_activation_delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (fc, sp) = start(config).await;
    let offering_id = compute_offering_id(&sp, SavingsPlanPaymentOption::NoUpfront).await;
    let create = || {
        sp.create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment("1.25")
            .client_token("tok-sp-1")
            .tags("buyonce-idempotency-token", "tok-sp-1")
            .send()
    };
    let first = create()
        .await
        .expect("first create succeeds")
        .savings_plan_id
        .unwrap();
    let second = create()
        .await
        .expect("a retry succeeds")
        .savings_plan_id
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(fc.ledger().len(), 1);

    let described = sp
        .describe_savings_plans()
        .savings_plan_ids(&first)
        .send()
        .await
        .unwrap();
    let plan = &described.savings_plans()[0];
    assert_eq!(plan.state, Some(SavingsPlanState::PaymentPending));
    assert_eq!(plan.commitment.as_deref(), Some("1.25"));
    assert_eq!(plan.savings_plan_type, Some(SavingsPlanType::Compute));
    assert_eq!(plan.term_duration_in_seconds, THREE_YEARS);
    assert_eq!(
        plan.tags()
            .and_then(|t| t.get("buyonce-idempotency-token"))
            .map(String::as_str),
        Some("tok-sp-1")
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let active = sp
        .describe_savings_plans()
        .states(SavingsPlanState::Active)
        .send()
        .await
        .unwrap();
    assert_eq!(active.savings_plans().len(), 1);

    let entry = &fc.ledger()[0];
    assert_eq!(entry.service, "savings-plans");
    assert_eq!(entry.idempotency_handle.as_deref(), Some("tok-sp-1"));
    assert_eq!(entry.price.upfront, 0.0);
    assert!((entry.price.recurring_hourly - 1.25).abs() < 1e-9);
    assert!((entry.price.total - 1.25 * 26_280.0).abs() < 1e-6);
}

#[tokio::test]
async fn the_same_client_token_with_other_parameters_is_a_validation_error() {
    let (fc, sp) = start(FakeCloudConfig::default()).await;
    let offering_id = compute_offering_id(&sp, SavingsPlanPaymentOption::NoUpfront).await;
    let create = |commitment: &'static str| {
        sp.create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment(commitment)
            .client_token("tok-sp-2")
            .send()
    };
    create("1.25").await.expect("first create succeeds");
    let err = create("2.50")
        .await
        .expect_err("a different commitment with the same token is refused");
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_validation_exception()),
        "{err:?}"
    );
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(fc.ledger().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_token_make_one_plan() {
    let (fc, sp) = start(FakeCloudConfig::default()).await;
    let offering_id = compute_offering_id(&sp, SavingsPlanPaymentOption::AllUpfront).await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let sp = sp.clone();
            let offering_id = offering_id.clone();
            tokio::spawn(async move {
                sp.create_savings_plan()
                    .savings_plan_offering_id(offering_id)
                    .commitment("0.5")
                    .client_token("tok-concurrent")
                    .send()
                    .await
                    .map(|o| o.savings_plan_id.unwrap())
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().expect("every create succeeds"));
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(fc.ledger().len(), 1);
    assert_eq!(fc.call_count("savingsplans:CreateSavingsPlan"), 16);
}

#[tokio::test]
async fn invalid_creates_are_refused_and_buy_nothing() {
    let (fc, sp) = start(FakeCloudConfig::default()).await;
    let all_upfront = compute_offering_id(&sp, SavingsPlanPaymentOption::AllUpfront).await;
    let partial = compute_offering_id(&sp, SavingsPlanPaymentOption::PartialUpfront).await;

    let err = sp
        .create_savings_plan()
        .savings_plan_offering_id(&all_upfront)
        .commitment("1")
        .upfront_payment_amount("100")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_validation_exception()));
    let err = sp
        .create_savings_plan()
        .savings_plan_offering_id(&all_upfront)
        .commitment("abc")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"));
    // 1 $/h for 3 years is 26280 $: 10 $ upfront is below the 50 % minimum.
    let err = sp
        .create_savings_plan()
        .savings_plan_offering_id(&partial)
        .commitment("1")
        .upfront_payment_amount("10")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationException"));
    let err = sp
        .create_savings_plan()
        .savings_plan_offering_id("00000000-0000-4000-8000-000000000000")
        .commitment("1")
        .send()
        .await
        .unwrap_err();
    assert!(err
        .as_service_error()
        .is_some_and(|e| e.is_resource_not_found_exception()));
    assert!(fc.ledger().is_empty());

    // A valid partial-upfront plan records its upfront amount.
    sp.create_savings_plan()
        .savings_plan_offering_id(&partial)
        .commitment("1")
        .upfront_payment_amount("13140")
        .send()
        .await
        .expect("valid partial upfront plan");
    let entry = &fc.ledger()[0];
    assert_eq!(entry.price.upfront, 13_140.0);
    assert!((entry.price.total - 26_280.0).abs() < 1e-6);
}

#[tokio::test]
async fn a_wrong_secret_is_an_invalid_signature() {
    let (fc, _) = start(FakeCloudConfig::default()).await;
    let config = sdk::config_with(
        &fc.endpoint(),
        "us-east-1",
        sdk::credentials("test", "wrong", None),
        aws_smithy_types::retry::RetryConfig::disabled(),
    );
    let err = Client::new(&config)
        .describe_savings_plans()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidSignatureException"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
}

#[tokio::test]
async fn partial_upfront_must_be_a_whole_number_between_half_and_99_percent() {
    let (fc, sp) = start(FakeCloudConfig::default()).await;
    let offering_id = compute_offering_id(&sp, SavingsPlanPaymentOption::PartialUpfront).await;
    // 3 years at 0.333 $/h: 8751.24 in total.
    let create = |upfront: &str, token: &str| {
        sp.create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment("0.333")
            .upfront_payment_amount(upfront)
            .client_token(token)
            .send()
    };
    for (upfront, why) in [
        ("4375.62", "cents"),
        ("4375", "below half"),
        ("8700", "above 99 %"),
    ] {
        let e = create(upfront, upfront).await.expect_err(why);
        assert_eq!(e.code(), Some("ValidationException"), "{why}");
    }
    create("4376", "whole")
        .await
        .expect("a whole number in range");
    assert_eq!(fc.ledger().len(), 1);
    assert_eq!(fc.ledger()[0].price.upfront, 4376.0);
}

#[tokio::test]
async fn every_modelled_currency_and_plan_type_is_sold_and_states_are_checked() {
    let (_fc, sp) = start(FakeCloudConfig::default()).await;
    for currency in [CurrencyCode::Usd, CurrencyCode::Eur, CurrencyCode::Cny] {
        let found = sp
            .describe_savings_plans_offerings()
            .plan_types(SavingsPlanType::Compute)
            .currencies(currency.clone())
            .send()
            .await
            .unwrap()
            .search_results
            .unwrap_or_default();
        assert!(!found.is_empty(), "{currency:?}");
        assert!(found.iter().all(|o| o.currency == Some(currency.clone())));
    }
    let database = offering(
        &sp,
        SavingsPlanType::Database,
        ONE_YEAR,
        SavingsPlanPaymentOption::NoUpfront,
    )
    .await;
    assert_eq!(database.len(), 1);
    let e = sp
        .describe_savings_plans()
        .states(SavingsPlanState::from("sold"))
        .send()
        .await
        .expect_err("not a SavingsPlanState");
    assert_eq!(e.code(), Some("ValidationException"));
}

#[tokio::test]
async fn a_client_token_is_forgotten_after_the_realism_ttl() {
    let (fc, sp) = start(FakeCloudConfig {
        realism: buyonce_fakecloud::Realism {
            client_token_ttl: Some(Duration::from_millis(300)),
            ..buyonce_fakecloud::Realism::friendly()
        },
        ..Default::default()
    })
    .await;
    let offering_id = compute_offering_id(&sp, SavingsPlanPaymentOption::NoUpfront).await;
    let create = || {
        sp.create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment("1")
            .client_token("tok-ttl")
            .send()
    };
    let a = create().await.unwrap().savings_plan_id;
    let b = create().await.unwrap().savings_plan_id;
    assert_eq!(a, b, "remembered within the TTL");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let c = create().await.unwrap().savings_plan_id;
    assert_ne!(a, c, "forgotten after it: a second plan");
    assert_eq!(fc.ledger().len(), 2);
}

#[tokio::test]
async fn strict_realism_hides_a_new_plan_and_answers_small_pages() {
    let (_fc, sp) = start(FakeCloudConfig {
        realism: buyonce_fakecloud::Realism::strict_deterministic(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let offering_id = compute_offering_id(&sp, SavingsPlanPaymentOption::NoUpfront).await;
    for n in 0..3 {
        sp.create_savings_plan()
            .savings_plan_offering_id(&offering_id)
            .commitment("1")
            .client_token(format!("tok-{n}"))
            .send()
            .await
            .unwrap();
    }
    let listed = |token: Option<String>| sp.describe_savings_plans().set_next_token(token).send();
    assert!(
        listed(None).await.unwrap().savings_plans().is_empty(),
        "not visible yet"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let first = listed(None).await.unwrap();
    assert_eq!(
        first.savings_plans().len(),
        2,
        "two per page, whatever was asked"
    );
    let second = listed(first.next_token.clone()).await.unwrap();
    assert_eq!(second.savings_plans().len(), 1);
    assert!(second.next_token.is_none());
}

//! fakecloud's STS and multi-account emulation, driven through the real `aws-sdk-sts` and
//! `aws-sdk-ec2` clients.

use aws_sdk_ec2::types::{InstanceType, OfferingClassType, OfferingTypeValues};
use aws_sdk_sts::error::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use buyonce_fakecloud::{sdk, FakeCloud, FakeCloudConfig, StaticCredentials};

async fn start(config: FakeCloudConfig) -> FakeCloud {
    FakeCloud::start(config).await.expect("fakecloud starts")
}

#[tokio::test]
async fn the_static_credentials_are_the_default_account() {
    let fc = start(FakeCloudConfig::default()).await;
    let sts = aws_sdk_sts::Client::new(&sdk::config(&fc.endpoint(), "us-east-1"));
    let me = sts
        .get_caller_identity()
        .send()
        .await
        .expect("caller identity");
    assert_eq!(me.account.as_deref(), Some("000000000000"));
    assert_eq!(me.arn.as_deref(), Some("arn:aws:iam::000000000000:root"));
}

#[tokio::test]
async fn assumed_role_credentials_act_in_the_role_account() {
    let fc = start(FakeCloudConfig::default()).await;
    let sts = aws_sdk_sts::Client::new(&sdk::config(&fc.endpoint(), "us-east-1"));
    let assumed = sts
        .assume_role()
        .role_arn("arn:aws:iam::111122223333:role/buyonce-purchaser")
        .role_session_name("worker-1")
        .send()
        .await
        .expect("assume role");
    let creds = assumed.credentials.unwrap();
    assert!(creds.access_key_id.starts_with("ASIA"));
    assert_eq!(
        assumed.assumed_role_user.unwrap().arn,
        "arn:aws:sts::111122223333:assumed-role/buyonce-purchaser/worker-1"
    );

    let role_config = sdk::config_with(
        &fc.endpoint(),
        "us-east-1",
        sdk::credentials(
            &creds.access_key_id,
            &creds.secret_access_key,
            Some(creds.session_token.clone()),
        ),
        RetryConfig::disabled(),
    );
    let me = aws_sdk_sts::Client::new(&role_config)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(me.account.as_deref(), Some("111122223333"));

    // A purchase with the role's credentials belongs to the role's account only.
    let ec2 = aws_sdk_ec2::Client::new(&role_config);
    let offering = ec2
        .describe_reserved_instances_offerings()
        .instance_type(InstanceType::C5Large)
        .offering_class(OfferingClassType::Standard)
        .offering_type(OfferingTypeValues::NoUpfront)
        .product_description(aws_sdk_ec2::types::RiProductDescription::LinuxUnix)
        .min_duration(31_536_000)
        .max_duration(31_536_000)
        .send()
        .await
        .unwrap()
        .reserved_instances_offerings()[0]
        .reserved_instances_offering_id
        .clone()
        .unwrap();
    ec2.purchase_reserved_instances_offering()
        .reserved_instances_offering_id(offering)
        .instance_count(1)
        .send()
        .await
        .expect("purchase in the role's account");
    assert_eq!(fc.ledger()[0].account, "111122223333");
    let default_ec2 = aws_sdk_ec2::Client::new(&sdk::config(&fc.endpoint(), "us-east-1"));
    assert!(default_ec2
        .describe_reserved_instances()
        .send()
        .await
        .unwrap()
        .reserved_instances()
        .is_empty());
    assert_eq!(
        ec2.describe_reserved_instances()
            .send()
            .await
            .unwrap()
            .reserved_instances()
            .len(),
        1
    );

    // The session token is part of the credential: without it, or tampered, the key is unknown.
    let no_token = sdk::config_with(
        &fc.endpoint(),
        "us-east-1",
        sdk::credentials(&creds.access_key_id, &creds.secret_access_key, None),
        RetryConfig::disabled(),
    );
    let err = aws_sdk_sts::Client::new(&no_token)
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"));
    let tampered = sdk::config_with(
        &fc.endpoint(),
        "us-east-1",
        sdk::credentials(
            &creds.access_key_id,
            &creds.secret_access_key,
            Some(format!("{}x", creds.session_token)),
        ),
        RetryConfig::disabled(),
    );
    let err = aws_sdk_sts::Client::new(&tampered)
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"));
}

#[tokio::test]
async fn invalid_assume_role_requests_are_validation_errors() {
    let fc = start(FakeCloudConfig::default()).await;
    let sts = aws_sdk_sts::Client::new(&sdk::config_without_retries(&fc.endpoint(), "us-east-1"));
    let err = sts
        .assume_role()
        .role_arn("not-an-arn")
        .role_session_name("s1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    let err = sts
        .assume_role()
        .role_arn("arn:aws:iam::111122223333:role/r")
        .role_session_name("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
    let err = sts
        .assume_role()
        .role_arn("arn:aws:iam::111122223333:role/r")
        .role_session_name("ok-session")
        .duration_seconds(60)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ValidationError"));
}

#[tokio::test]
async fn extra_static_credentials_map_to_their_own_account() {
    let config = FakeCloudConfig {
        extra_credentials: vec![StaticCredentials {
            access_key_id: "AKIASECOND".into(),
            secret_access_key: "second-secret".into(),
            account: "222233334444".into(),
        }],
        ..Default::default()
    };
    let fc = start(config).await;
    let second = sdk::config_with(
        &fc.endpoint(),
        "us-east-1",
        sdk::credentials("AKIASECOND", "second-secret", None),
        RetryConfig::disabled(),
    );
    let me = aws_sdk_sts::Client::new(&second)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(me.account.as_deref(), Some("222233334444"));
}

#[tokio::test]
async fn sts_auth_errors_are_spelled_as_aws_query_does() {
    let fc = start(FakeCloudConfig::default()).await;
    let cases = [
        ("test", "wrong", "SignatureDoesNotMatch"),
        ("AKIANOBODY", "test", "InvalidClientTokenId"),
        ("ASIANOBODY", "x", "InvalidClientTokenId"),
    ];
    for (key, secret, code) in cases {
        let config = sdk::config_with(
            &fc.endpoint(),
            "us-east-1",
            sdk::credentials(key, secret, None),
            RetryConfig::disabled(),
        );
        let err = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(code), "{key}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    }
}

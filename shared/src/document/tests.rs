//! Decoding and validation of whole documents, from the design example outward, and fuzzing of
//! the decoder.

use super::*;

const EXAMPLE: &str = r#"{
      "execution_id": "exec-2026-11-28-0001",
      "approved_by": "finops@example.com",
      "source": "cost-optimizer",
      "recommendations": [
        {"provider": "aws", "service": "ec2", "account": "123456789012", "region": "us-east-1",
         "resource_type": "m5.large", "count": 2, "term": "1y", "payment": "all-upfront",
         "platform": "Linux/UNIX", "offering_class": "standard", "max_upfront_usd": 1500.0},
        {"provider": "aws", "service": "savings-plans", "account": "123456789012",
         "plan_type": "compute", "term": "3y", "payment": "no-upfront",
         "commitment_usd_per_hour": 1.25},
        {"provider": "aws", "service": "rds", "account": "123456789012", "region": "eu-west-1",
         "resource_type": "db.r6g.large", "engine": "postgresql", "multi_az": true,
         "count": 1, "term": "1y", "payment": "partial-upfront"},
        {"provider": "azure", "service": "vm", "account": "00000000-0000-0000-0000-000000000001",
         "region": "westeurope", "resource_type": "Standard_D2s_v5", "count": 3, "term": "1y",
         "payment": "upfront"}
      ]
    }"#;

fn with(patch: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    patch(&mut v);
    serde_json::to_vec(&v).unwrap()
}

fn field_error(bytes: &[u8]) -> FieldError {
    match ExecutionDocument::from_json(bytes) {
        Err(DocumentError::Field(e)) => e,
        other => panic!("expected a field error, got {other:?}"),
    }
}

fn invalid(bytes: &[u8]) -> Vec<FieldError> {
    match ExecutionDocument::from_json(bytes) {
        Err(DocumentError::Invalid(e)) => e,
        other => panic!("expected validation errors, got {other:?}"),
    }
}

#[test]
fn the_design_example_decodes() {
    let doc = ExecutionDocument::from_json(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(doc.recommendations.len(), 4);
    assert_eq!(doc.lineage_key().as_str(), "exec-2026-11-28-0001");
    assert_eq!(doc.recommendations[0].service, Service::Ec2);
    assert_eq!(doc.recommendations[1].units(), 1);
}

#[test]
fn unknown_field_names_its_path() {
    let e = field_error(&with(|v| v["recommendations"][1]["colour"] = "red".into()));
    assert_eq!(e.path, "recommendations[1].colour");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
}

#[test]
fn wrong_type_names_its_path() {
    let e = field_error(&with(|v| v["recommendations"][0]["count"] = "two".into()));
    assert_eq!(e.path, "recommendations[0].count");
    assert!(e.message.contains("invalid type"), "{e}");
}

#[test]
fn unknown_service_term_and_payment_list_the_expected_values() {
    let e = field_error(&with(|v| {
        v["recommendations"][0]["service"] = "lambda".into()
    }));
    assert_eq!(e.path, "recommendations[0].service");
    assert!(e.message.contains("savings-plans"), "{e}");
    let e = field_error(&with(|v| v["recommendations"][2]["term"] = "2y".into()));
    assert_eq!(e.path, "recommendations[2].term");
    assert!(e.message.contains("1y"), "{e}");
    let e = field_error(&with(|v| {
        v["recommendations"][2]["payment"] = "later".into()
    }));
    assert_eq!(e.path, "recommendations[2].payment");
}

#[test]
fn missing_required_field_is_reported() {
    let e = field_error(&with(|v| {
        v.as_object_mut().unwrap().remove("approved_by");
    }));
    assert!(e.message.contains("missing field `approved_by`"), "{e}");
}

#[test]
fn count_below_one_and_bad_payment_for_provider_are_both_reported() {
    let errors = invalid(&with(|v| {
        v["recommendations"][0]["count"] = 0.into();
        v["recommendations"][3]["payment"] = "all-upfront".into();
    }));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec!["recommendations[0].count", "recommendations[3].payment"]
    );
    assert!(errors[1].message.contains("upfront or monthly"));
}

#[test]
fn empty_recommendation_list_is_rejected() {
    let errors = invalid(&with(|v| v["recommendations"] = serde_json::json!([])));
    assert_eq!(errors[0].path, "recommendations");
}

#[test]
fn service_must_belong_to_provider() {
    let errors = invalid(&with(|v| v["recommendations"][3]["service"] = "rds".into()));
    assert_eq!(errors[0].path, "recommendations[3].service");
    assert!(errors[0].message.contains("aws service"), "{}", errors[0]);
}

#[test]
fn azure_search_is_refused_with_the_reason() {
    let errors = invalid(&with(|v| {
        v["recommendations"][3]["service"] = "search".into();
        v["recommendations"][3]["resource_type"] = "Standard_S1".into();
    }));
    assert_eq!(errors[0].path, "recommendations[3].service");
    assert!(
        errors[0].message.contains("no value for Azure AI Search"),
        "{}",
        errors[0]
    );
}

#[test]
fn an_opensearch_offering_id_must_be_a_guid() {
    let opensearch = |id: &str| {
        let id = id.to_owned();
        with(move |v| {
            v["recommendations"][0] = serde_json::json!({
                "provider": "aws", "service": "opensearch", "account": "123456789012",
                "region": "us-east-1", "resource_type": "r6g.large.search", "count": 1,
                "term": "1y", "payment": "all-upfront", "offering_id": id});
        })
    };
    let errors = invalid(&opensearch("offering-1"));
    assert_eq!(errors[0].path, "recommendations[0].offering_id");
    assert!(errors[0].message.contains("GUID"), "{}", errors[0]);
    ExecutionDocument::from_json(&opensearch("1f14354c-dc12-4c8d-8090-6f295a3a34aa"))
        .expect("a GUID is accepted");
}

#[test]
fn database_savings_plans_are_a_plan_type() {
    let doc = ExecutionDocument::from_json(&with(|v| {
        v["recommendations"][1]["plan_type"] = "database".into();
    }))
    .unwrap();
    assert_eq!(doc.recommendations[1].plan_type, Some(PlanType::Database));
}

#[test]
fn service_specific_requirements() {
    let errors = invalid(&with(|v| {
        v["recommendations"][2]
            .as_object_mut()
            .unwrap()
            .remove("engine");
        v["recommendations"][1]["region"] = "us-east-1".into();
        v["recommendations"][0]["multi_az"] = true.into();
    }));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"recommendations[2].engine"), "{paths:?}");
    assert!(paths.contains(&"recommendations[1].region"), "{paths:?}");
    assert!(paths.contains(&"recommendations[0].multi_az"), "{paths:?}");
}

#[test]
fn negative_count_is_a_type_error() {
    let e = field_error(&with(|v| v["recommendations"][0]["count"] = (-1).into()));
    assert_eq!(e.path, "recommendations[0].count");
}

#[test]
fn syntax_errors_and_size_limit() {
    assert!(matches!(
        ExecutionDocument::from_json(b"{\"execution_id\": "),
        Err(DocumentError::Syntax { .. })
    ));
    assert!(matches!(
        ExecutionDocument::from_json(b"\xff\xfe"),
        Err(DocumentError::NotUtf8(0))
    ));
    let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert!(matches!(
        ExecutionDocument::from_json(&big),
        Err(DocumentError::TooLarge { .. })
    ));
}

#[test]
fn canonical_form_makes_the_default_lineage_explicit() {
    let doc = ExecutionDocument::from_json(EXAMPLE.as_bytes()).unwrap();
    let canonical = doc.canonical();
    assert_eq!(
        canonical.idempotency_key.as_ref().map(|k| k.as_str()),
        Some("exec-2026-11-28-0001")
    );
    assert_eq!(canonical.canonical(), canonical);
}

/// Arbitrary JSON values, for structure-aware fuzzing of the decoder.
fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let _ = ExecutionDocument::from_json(&bytes);
    }

    #[test]
    fn decoding_a_mutated_valid_document_never_panics(
        field in proptest::sample::select(vec![
            "execution_id", "idempotency_key", "approved_by", "source", "recommendations",
            "provider", "service", "account", "region", "resource_type", "count", "term",
            "payment", "platform", "offering_class", "engine", "multi_az", "plan_type",
            "commitment_usd_per_hour", "offering_id", "max_upfront_usd", "extra",
        ]),
        index in 0usize..4,
        value in json_value(),
    ) {
        let bytes = with(|v| {
            if ["execution_id", "idempotency_key", "approved_by", "source", "recommendations", "extra"].contains(&field) {
                v[field] = value.clone();
            } else {
                v["recommendations"][index][field] = value.clone();
            }
        });
        match ExecutionDocument::from_json(&bytes) {
            // Whatever is accepted must be internally valid and re-serialise losslessly.
            Ok(doc) => {
                proptest::prop_assert!(doc.validate().is_ok());
                let again = ExecutionDocument::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
                proptest::prop_assert_eq!(again, doc);
            }
            // Whatever is refused says where, unless it is not JSON at all.
            Err(e) => {
                let located = !e.field_errors().is_empty() || matches!(e, DocumentError::Syntax { .. });
                proptest::prop_assert!(located, "error without a location: {}", e);
            }
        }
    }
}

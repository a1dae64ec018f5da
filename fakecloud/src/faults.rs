//! Fault injection: latency, injected errors, commit-then-fail, tag-write and lookup failures.
//!
//! Rules are matched against operation names of the form `"<service>:<Operation>"` (the same keys
//! as the call counts), with `*` wildcards. Whether a probabilistic rule fires is a pure function
//! of `(seed, rule index, how many calls the rule has matched so far)`, so a chaos run replays
//! exactly with the same seed and the same per-operation call order.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The fault configuration: the JSON of `--faults FILE` and of `PUT /_fakecloud/faults`.
///
/// ```json
/// {"seed": 7, "rules": [
///   {"operation": "ec2:PurchaseReservedInstancesOffering", "kind": "commit_then_fail", "failure": "drop_connection", "times": 1},
///   {"operation": "rds:*", "kind": "error", "error": "throttling", "probability": 0.3},
///   {"operation": "*", "kind": "latency", "latency_ms": 50}
/// ]}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Seed of the probabilistic decisions; `None` uses the server's `--seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Rules, all evaluated for every call (several may apply to one call).
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }

    /// The given rules with the server's seed.
    pub fn rules(rules: impl IntoIterator<Item = FaultRule>) -> Self {
        Self {
            seed: None,
            rules: rules.into_iter().collect(),
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Operation pattern: `"ec2:PurchaseReservedInstancesOffering"`, `"rds:*"`, `"*"`.
    pub operation: String,
    /// Chance that the rule fires on a matching call (0.0–1.0, default 1.0).
    #[serde(default = "one")]
    pub probability: f64,
    /// Fire at most this many times (default: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// Let this many matching calls through before the rule may fire (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub after: u64,
    /// What happens when it fires.
    #[serde(flatten)]
    pub action: FaultAction,
}

fn one() -> f64 {
    1.0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FaultRule {
    /// A rule that always fires.
    pub fn new(operation: impl Into<String>, action: FaultAction) -> Self {
        Self {
            operation: operation.into(),
            probability: 1.0,
            times: None,
            after: 0,
            action,
        }
    }

    /// Adds `latency` to matching calls.
    pub fn latency(operation: impl Into<String>, latency: Duration) -> Self {
        Self::new(
            operation,
            FaultAction::Latency {
                latency_ms: latency.as_millis() as u64,
            },
        )
    }

    /// Answers matching calls with `error`, without executing them.
    pub fn error(operation: impl Into<String>, error: InjectedError) -> Self {
        Self::new(operation, FaultAction::Error { error })
    }

    /// Executes matching calls (the purchase is recorded), then loses the response.
    pub fn commit_then_fail(operation: impl Into<String>, failure: CommitFailure) -> Self {
        Self::new(operation, FaultAction::CommitThenFail { failure })
    }

    /// Makes tag writes fail (see [`FaultAction::TagWriteFailure`]).
    pub fn tag_write_failure(operation: impl Into<String>) -> Self {
        Self::new(operation, FaultAction::TagWriteFailure { error: None })
    }

    /// Makes lookups fail with a server error.
    pub fn lookup_failure(operation: impl Into<String>) -> Self {
        Self::new(
            operation,
            FaultAction::LookupFailure {
                mode: LookupFailureMode::Error,
                error: None,
            },
        )
    }

    /// Makes lookups answer as if nothing existed (eventual consistency).
    pub fn lookup_empty(operation: impl Into<String>) -> Self {
        Self::new(
            operation,
            FaultAction::LookupFailure {
                mode: LookupFailureMode::Empty,
                error: None,
            },
        )
    }

    /// Makes purchases end in a failed state instead of active/Succeeded.
    pub fn provisioning_failure(operation: impl Into<String>, state: Option<&str>) -> Self {
        Self::new(
            operation,
            FaultAction::ProvisioningFailure {
                state: state.map(str::to_string),
            },
        )
    }

    /// Sets the firing probability.
    pub fn with_probability(mut self, probability: f64) -> Self {
        self.probability = probability;
        self
    }

    /// Limits how many times the rule fires.
    pub fn times(mut self, times: u64) -> Self {
        self.times = Some(times);
        self
    }

    /// Lets the first `calls` matching calls through.
    pub fn after(mut self, calls: u64) -> Self {
        self.after = calls;
        self
    }
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Delay the answer.
    Latency {
        /// Added delay in milliseconds.
        latency_ms: u64,
    },
    /// Answer with an error; the operation is not executed.
    Error {
        /// The error.
        error: InjectedError,
    },
    /// Execute the operation (a purchase is committed), then answer 5xx or drop the connection:
    /// "bought, but the response was lost".
    CommitThenFail {
        /// How the response is lost (default `server_error`).
        #[serde(default)]
        failure: CommitFailure,
    },
    /// Tag writes fail. A dedicated tag call (`ec2:CreateTags`) answers `error` (default: the
    /// protocol's internal error) and writes nothing; a purchase that carries tags
    /// (`savingsplans:CreateSavingsPlan`, `rds:…`, `memorydb:…`) succeeds but its tags are lost.
    TagWriteFailure {
        /// Error for dedicated tag calls.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<InjectedError>,
    },
    /// Lookups (`Describe*`, `Get*`, `List*`) fail or answer empty.
    LookupFailure {
        /// `error` (default) or `empty`.
        #[serde(default)]
        mode: LookupFailureMode,
        /// Error for `mode = error` (default: the protocol's internal error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<InjectedError>,
    },
    /// The purchase is recorded but ends failed: `payment-failed` for AWS, `Failed` for Azure
    /// (or the given state, e.g. `BillingFailed`).
    ProvisioningFailure {
        /// Final state to use instead of the service default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
    },
}

/// An error to inject, spelled by each protocol as the real service spells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectedError {
    /// `RequestLimitExceeded` (EC2), `Throttling` (awsQuery), `ThrottlingException` (JSON),
    /// 429 `TooManyRequests` (Azure).
    Throttling,
    /// HTTP 500: `InternalError` (EC2), `InternalFailure` (awsQuery, awsJson),
    /// `InternalServerException` (Savings Plans), `InternalException` (OpenSearch),
    /// `InternalServerError` (Azure).
    InternalFailure,
    /// HTTP 503 `ServiceUnavailable` (`Unavailable` for EC2).
    ServiceUnavailable,
    /// Any status and code.
    Custom {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message (default: a generic one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// How a committed call loses its response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitFailure {
    /// Answer HTTP 500 with the protocol's internal error.
    #[default]
    ServerError,
    /// Close the connection without answering.
    DropConnection,
}

/// How a lookup fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupFailureMode {
    /// Answer an error.
    #[default]
    Error,
    /// Answer successfully with nothing found.
    Empty,
}

/// What the faults decided for one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Total added latency.
    pub latency: Duration,
    /// Answer this instead of executing (error rules, lookup errors, tag-call failures).
    pub reject: Option<InjectedError>,
    /// Lookups answer empty.
    pub lookup_empty: bool,
    /// Tags carried by a purchase are dropped.
    pub drop_tags: bool,
    /// Execute, then lose the response this way.
    pub commit_then_fail: Option<CommitFailure>,
    /// The purchase ends failed: `Some(None)` = the service default state, `Some(Some(s))` = `s`.
    pub provisioning_failure: Option<Option<String>>,
}

/// The kind of an operation, which decides which rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `Describe*`, `Get*`, `List*`.
    Lookup,
    /// A dedicated tag write (`CreateTags`, `TagResource`).
    TagWrite,
    /// A purchase (creates a commitment).
    Purchase,
    /// Anything else (STS, token endpoint, calculatePrice).
    Other,
}

/// The live fault state: rules plus their counters.
#[derive(Debug, Clone)]
pub struct FaultEngine {
    faults: Faults,
    seed: u64,
    matched: Vec<u64>,
    fired: Vec<u64>,
}

impl FaultEngine {
    /// Starts counting from zero with `faults`; `default_seed` applies when `faults.seed` is unset.
    pub fn new(faults: Faults, default_seed: u64) -> Self {
        let n = faults.rules.len();
        let seed = faults.seed.unwrap_or(default_seed);
        Self {
            faults,
            seed,
            matched: vec![0; n],
            fired: vec![0; n],
        }
    }

    /// The configuration with the effective seed filled in.
    pub fn faults(&self) -> Faults {
        Faults {
            seed: Some(self.seed),
            rules: self.faults.rules.clone(),
        }
    }

    /// Decides the faults for one call of `operation`.
    pub fn decide(&mut self, operation: &str, kind: OpKind) -> Decision {
        let mut decision = Decision::default();
        for (index, rule) in self.faults.rules.iter().enumerate() {
            if !glob_match(&rule.operation, operation) || !applies(&rule.action, kind) {
                continue;
            }
            let n = self.matched[index];
            self.matched[index] += 1;
            if n < rule.after || rule.times.is_some_and(|t| self.fired[index] >= t) {
                continue;
            }
            if roll(self.seed, index as u64, n) >= rule.probability {
                continue;
            }
            self.fired[index] += 1;
            match &rule.action {
                FaultAction::Latency { latency_ms } => {
                    decision.latency += Duration::from_millis(*latency_ms)
                }
                FaultAction::Error { error } => {
                    decision.reject.get_or_insert_with(|| error.clone());
                }
                FaultAction::CommitThenFail { failure } => {
                    decision.commit_then_fail.get_or_insert(*failure);
                }
                FaultAction::TagWriteFailure { error } => {
                    if kind == OpKind::TagWrite {
                        decision.reject.get_or_insert_with(|| {
                            error.clone().unwrap_or(InjectedError::InternalFailure)
                        });
                    } else {
                        decision.drop_tags = true;
                    }
                }
                FaultAction::LookupFailure {
                    mode: LookupFailureMode::Error,
                    error,
                } => {
                    decision.reject.get_or_insert_with(|| {
                        error.clone().unwrap_or(InjectedError::InternalFailure)
                    });
                }
                FaultAction::LookupFailure {
                    mode: LookupFailureMode::Empty,
                    ..
                } => decision.lookup_empty = true,
                FaultAction::ProvisioningFailure { state } => {
                    decision
                        .provisioning_failure
                        .get_or_insert_with(|| state.clone());
                }
            }
        }
        decision
    }
}

/// Which operations a rule kind can affect: a `"*"` lookup rule must not hit purchases.
fn applies(action: &FaultAction, kind: OpKind) -> bool {
    match action {
        FaultAction::Latency { .. }
        | FaultAction::Error { .. }
        | FaultAction::CommitThenFail { .. } => true,
        FaultAction::TagWriteFailure { .. } => matches!(kind, OpKind::TagWrite | OpKind::Purchase),
        FaultAction::LookupFailure { .. } => kind == OpKind::Lookup,
        FaultAction::ProvisioningFailure { .. } => kind == OpKind::Purchase,
    }
}

/// A uniform number in `[0, 1)` from `(seed, rule, n)`: splitmix64, stable across Rust versions.
pub(crate) fn roll(seed: u64, rule: u64, n: u64) -> f64 {
    let mut z =
        seed ^ rule.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_format_round_trips() {
        let json = r#"{"seed": 7, "rules": [
            {"operation": "ec2:PurchaseReservedInstancesOffering", "kind": "commit_then_fail", "failure": "drop_connection", "times": 1},
            {"operation": "rds:*", "kind": "error", "error": "throttling", "probability": 0.3},
            {"operation": "*", "kind": "error", "error": {"custom": {"status": 502, "code": "BadGateway"}}},
            {"operation": "*", "kind": "lookup_failure", "mode": "empty"},
            {"operation": "*", "kind": "latency", "latency_ms": 50}
        ]}"#;
        let faults: Faults = serde_json::from_str(json).unwrap();
        assert_eq!(faults.seed, Some(7));
        assert_eq!(
            faults.rules[0].action,
            FaultAction::CommitThenFail {
                failure: CommitFailure::DropConnection
            }
        );
        assert_eq!(faults.rules[1].probability, 0.3);
        let again: Faults = serde_json::from_str(&serde_json::to_string(&faults).unwrap()).unwrap();
        assert_eq!(again, faults);
    }

    #[test]
    fn rules_respect_after_times_and_kind() {
        let faults = Faults::rules([
            FaultRule::error("ec2:*", InjectedError::Throttling)
                .after(1)
                .times(2),
            FaultRule::lookup_failure("*"),
        ]);
        let mut engine = FaultEngine::new(faults, 0);
        let purchases: Vec<bool> = (0..5)
            .map(|_| {
                engine
                    .decide("ec2:Purchase", OpKind::Purchase)
                    .reject
                    .is_some()
            })
            .collect();
        assert_eq!(purchases, vec![false, true, true, false, false]);
        assert_eq!(
            engine.decide("rds:DescribeX", OpKind::Lookup).reject,
            Some(InjectedError::InternalFailure)
        );
        assert_eq!(
            engine.decide("rds:PurchaseX", OpKind::Purchase).reject,
            None
        );
    }

    #[test]
    fn operation_globs() {
        assert!(glob_match("*", "ec2:CreateTags"));
        assert!(glob_match("ec2:*", "ec2:CreateTags"));
        assert!(glob_match(
            "*:Purchase*",
            "rds:PurchaseReservedDBInstancesOffering"
        ));
        assert!(glob_match("ec2:CreateTags", "ec2:CreateTags"));
        assert!(!glob_match("ec2:CreateTags", "ec2:CreateTagsX"));
        assert!(!glob_match("rds:*", "ec2:CreateTags"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn probabilistic_rules_replay_with_the_same_seed() {
        let run = |seed| {
            let mut engine = FaultEngine::new(
                Faults::rules([
                    FaultRule::error("*", InjectedError::Throttling).with_probability(0.5)
                ]),
                seed,
            );
            (0..64)
                .map(|_| engine.decide("x:Y", OpKind::Other).reject.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let fired = run(1).into_iter().filter(|f| *f).count();
        assert!((16..48).contains(&fired), "{fired} of 64 fired at p=0.5");
    }
}

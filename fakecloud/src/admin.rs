//! The admin API under `/_fakecloud/` (JSON), for tests and chaos runs:
//!
//! | Method | Path | |
//! |---|---|---|
//! | GET | `/_fakecloud/ledger` | `{"commitments": [LedgerEntry…]}` |
//! | GET | `/_fakecloud/calls` | `{"calls": {"ec2:PurchaseReservedInstancesOffering": 1, …}}` |
//! | POST | `/_fakecloud/reset` | forget everything, restore the startup faults (204) |
//! | GET / PUT | `/_fakecloud/faults` | read / replace the faults (same JSON as `--faults`) |
//! | GET / PUT | `/_fakecloud/realism` | read / replace the realism knobs ([`super::Realism`]) |
//! | PUT | `/_fakecloud/commitments/{id}/state` | `{"state": "Cancelled"}`: override a state |
//! | GET | `/_fakecloud/catalog` | the active catalog |
//! | GET | `/_fakecloud/healthz` | `ok` |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::faults::Faults;
use super::ledger::LedgerEntry;
use super::server::Shared;

/// Body of `GET /_fakecloud/ledger`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerResponse {
    /// Every commitment ever created, oldest first.
    pub commitments: Vec<LedgerEntry>,
}

/// Body of `GET /_fakecloud/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallsResponse {
    /// Calls per `"<service>:<Operation>"`.
    pub calls: BTreeMap<String, u64>,
}

/// Body of `PUT /_fakecloud/commitments/{id}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRequest {
    /// The provider state to report from now on.
    pub state: String,
}

/// The admin routes, to be nested under `/_fakecloud`.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/ledger", get(ledger))
        .route("/calls", get(calls))
        .route("/reset", post(reset))
        .route("/faults", get(get_faults).put(put_faults))
        .route("/realism", get(get_realism).put(put_realism))
        .route("/commitments/{id}/state", put(set_state))
        .route("/catalog", get(catalog))
        .route("/healthz", get(|| async { "ok" }))
}

async fn ledger(State(shared): State<Arc<Shared>>) -> Json<LedgerResponse> {
    Json(LedgerResponse {
        commitments: shared.ledger(),
    })
}

async fn calls(State(shared): State<Arc<Shared>>) -> Json<CallsResponse> {
    Json(CallsResponse {
        calls: shared.store().calls.clone(),
    })
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    tracing::info!("fakecloud state reset");
    StatusCode::NO_CONTENT
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<Faults> {
    Json(shared.faults())
}

/// Parses the faults with the JSON path of any error, so a typo in a chaos config is obvious.
async fn put_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut de = serde_json::Deserializer::from_slice(&body);
    match serde_path_to_error::deserialize::<_, Faults>(&mut de) {
        Ok(faults) => {
            tracing::info!(rules = faults.rules.len(), "faults replaced");
            shared.set_faults(faults);
            Json(shared.faults()).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("invalid faults at {}: {}", error.path(), error.inner()),
        )
            .into_response(),
    }
}

async fn get_realism(State(shared): State<Arc<Shared>>) -> Json<super::Realism> {
    Json(shared.realism())
}

async fn put_realism(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut de = serde_json::Deserializer::from_slice(&body);
    match serde_path_to_error::deserialize::<_, super::Realism>(&mut de) {
        Ok(realism) => {
            tracing::info!(?realism, "realism replaced");
            shared.set_realism(realism);
            Json(shared.realism()).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            format!("invalid realism at {}: {}", error.path(), error.inner()),
        )
            .into_response(),
    }
}

async fn set_state(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request: StateRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("invalid body: {error}")).into_response()
        }
    };
    match shared.set_state(&id, &request.state) {
        Some(entry) => Json(entry).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no commitment {id}")).into_response(),
    }
}

async fn catalog(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.catalog.catalog().clone()).into_response()
}

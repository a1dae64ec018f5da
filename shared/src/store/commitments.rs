//! `commitments`: the ledger of what was bought, keyed by token (one row per recommendation,
//! ever). Rows are only inserted, by [`Store::record_success`](super::Store::record_success).

use chrono::{DateTime, Utc};

use super::{parsed, Store, StoreResult};
use crate::ids::ExecutionId;
use crate::token::IdempotencyToken;

#[derive(Debug, Clone, serde::Serialize)]
pub struct CommitmentRow {
    #[serde(skip)]
    pub token: IdempotencyToken,
    pub execution_id: ExecutionId,
    pub rec_index: i32,
    pub provider: String,
    pub service: String,
    pub account: String,
    pub region: Option<String>,
    pub commitment_id: String,
    pub cost_usd: Option<f64>,
    pub how: String,
    pub recorded_at: DateTime<Utc>,
}

impl Store {
    /// The ledger rows of an execution, or of everything when `execution_id` is `None`.
    pub async fn commitments(
        &self,
        execution_id: Option<&ExecutionId>,
    ) -> StoreResult<Vec<CommitmentRow>> {
        let client = self.conn("commitments").await?;
        let rows = client
            .query(
                "SELECT token, execution_id, rec_index, provider, service, account, region,
                        commitment_id, cost_usd::float8, how, recorded_at
                   FROM commitments
                  WHERE $1::text IS NULL OR execution_id = $1
                  ORDER BY execution_id, rec_index",
                &[&execution_id.map(ExecutionId::as_str)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CommitmentRow {
                    token: parsed(r, 0, IdempotencyToken::parse)?,
                    execution_id: parsed(r, 1, ExecutionId::parse)?,
                    rec_index: r.try_get(2)?,
                    provider: r.try_get(3)?,
                    service: r.try_get(4)?,
                    account: r.try_get(5)?,
                    region: r.try_get(6)?,
                    commitment_id: r.try_get(7)?,
                    cost_usd: r.try_get(8)?,
                    how: r.try_get(9)?,
                    recorded_at: r.try_get(10)?,
                })
            })
            .collect()
    }

    /// Which of `commitment_ids` are in the ledger under another token (EC2/Redshift
    /// attribution: a commitment is never recovered by two items), each at most once per
    /// time it is asked for.
    pub async fn attributed_among(
        &self,
        commitment_ids: &[String],
        token: &IdempotencyToken,
    ) -> StoreResult<Vec<String>> {
        if commitment_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.conn("attributed_among").await?;
        let stmt = client.prepare_cached(ATTRIBUTED_AMONG_SQL).await?;
        let rows = client
            .query(&stmt, &[&commitment_ids, &token.as_str()])
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

/// Which of `$1` a ledger row holds under another token than `$2`
/// ([`Store::attributed_among`]). One index probe per ID: as a generic plan,
/// `commitment_id = ANY($1)` does not know the array's length, and without statistics it
/// scanned the whole ledger (`shared/tests/plans.rs`); a `LIMIT` in the lateral subquery
/// keeps it a nested loop of `commitments_commitment_id` lookups.
pub(crate) const ATTRIBUTED_AMONG_SQL: &str = "SELECT c.commitment_id
       FROM unnest($1::text[]) AS wanted (id),
            LATERAL (SELECT commitment_id FROM commitments
                      WHERE commitment_id = wanted.id AND token <> $2 LIMIT 1) c";

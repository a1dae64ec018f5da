//! `fleet_control`, `daily_spend`, `budget_reservations`: the operator brakes (DESIGN §9).

use chrono::{DateTime, NaiveDate, Utc};

use super::{Store, StoreResult};
use crate::token::IdempotencyToken;

/// The fleet-wide pause flag.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PauseState {
    pub paused: bool,
    pub reason: Option<String>,
    pub changed_by: Option<String>,
    pub changed_at: DateTime<Utc>,
}

/// Result of trying to reserve budget for one purchase.
#[derive(Debug, Clone, PartialEq)]
pub enum Reservation {
    /// Reserved now (or no budget is configured).
    Reserved,
    /// This token already holds a reservation (a retry or a recovery): counted once.
    AlreadyReserved,
    /// Would exceed the day's budget.
    OverBudget { reserved_usd: f64, budget_usd: f64 },
}

/// Today's spend against the budget.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpendToday {
    pub day: NaiveDate,
    pub reserved_usd: f64,
}

impl Store {
    /// Sets or clears the pause flag. Workers check it in the same statement that claims an
    /// item, so no purchase starts after this commits.
    pub async fn set_paused(
        &self,
        paused: bool,
        reason: Option<&str>,
        changed_by: &str,
    ) -> StoreResult<PauseState> {
        let client = self.conn("set_paused").await?;
        let row = client
            .query_one(
                "UPDATE fleet_control SET paused = $1, reason = $2, changed_by = $3,
                        changed_at = now()
                  WHERE id RETURNING paused, reason, changed_by, changed_at",
                &[&paused, &reason, &changed_by],
            )
            .await?;
        Ok(PauseState {
            paused: row.try_get(0)?,
            reason: row.try_get(1)?,
            changed_by: row.try_get(2)?,
            changed_at: row.try_get(3)?,
        })
    }

    pub async fn pause_state(&self) -> StoreResult<PauseState> {
        let client = self.conn("pause_state").await?;
        // Read before every purchase: prepared once per connection.
        let stmt = client
            .prepare_cached(
                "SELECT paused, reason, changed_by, changed_at FROM fleet_control WHERE id",
            )
            .await?;
        let row = client.query_one(&stmt, &[]).await?;
        Ok(PauseState {
            paused: row.try_get(0)?,
            reason: row.try_get(1)?,
            changed_by: row.try_get(2)?,
            changed_at: row.try_get(3)?,
        })
    }

    /// Reserves `amount_usd` of today's (UTC) budget for `token`, atomically: the day's row is
    /// updated under its row lock only if the new total stays within `budget_usd`, so racing
    /// workers cannot overspend. A token holds at most one reservation, ever.
    pub async fn reserve_budget(
        &self,
        token: &IdempotencyToken,
        amount_usd: f64,
        budget_usd: f64,
    ) -> StoreResult<Reservation> {
        let token = token.as_str();
        let mut client = self.conn("reserve_budget").await?;
        let tx = client.transaction().await?;
        let existing = tx
            .query_opt(
                "SELECT state FROM budget_reservations WHERE token = $1 FOR UPDATE",
                &[&token],
            )
            .await?;
        if let Some(row) = &existing {
            let state: String = row.try_get(0)?;
            if state == "reserved" {
                tx.commit().await?;
                return Ok(Reservation::AlreadyReserved);
            }
        }
        tx.execute(
            "INSERT INTO daily_spend (day) VALUES ((now() AT TIME ZONE 'UTC')::date)
             ON CONFLICT (day) DO NOTHING",
            &[],
        )
        .await?;
        let updated = tx
            .query_opt(
                "UPDATE daily_spend SET reserved_usd = reserved_usd + $1::float8::numeric
                  WHERE day = (now() AT TIME ZONE 'UTC')::date
                    AND reserved_usd + $1::float8::numeric <= $2::float8::numeric
              RETURNING reserved_usd::float8",
                &[&amount_usd, &budget_usd],
            )
            .await?;
        if updated.is_none() {
            let row = tx
                .query_one(
                    "SELECT reserved_usd::float8 FROM daily_spend
                      WHERE day = (now() AT TIME ZONE 'UTC')::date",
                    &[],
                )
                .await?;
            let reserved_usd: f64 = row.try_get(0)?;
            tx.rollback().await?;
            return Ok(Reservation::OverBudget {
                reserved_usd,
                budget_usd,
            });
        }
        tx.execute(
            "INSERT INTO budget_reservations (token, day, amount_usd, state)
             VALUES ($1, (now() AT TIME ZONE 'UTC')::date, $2::float8::numeric, 'reserved')
             ON CONFLICT (token) DO UPDATE
                SET day = EXCLUDED.day, amount_usd = EXCLUDED.amount_usd, state = 'reserved'",
            &[&token, &amount_usd],
        )
        .await?;
        tx.commit().await?;
        Ok(Reservation::Reserved)
    }

    /// Gives a reservation back (the purchase certainly did not happen: a permanent refusal).
    /// Never called when the outcome is unknown: keeping the money reserved is the safe side.
    pub async fn release_budget(&self, token: &IdempotencyToken) -> StoreResult<bool> {
        let token = token.as_str();
        let mut client = self.conn("release_budget").await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE budget_reservations SET state = 'released'
                  WHERE token = $1 AND state = 'reserved'
              RETURNING day, amount_usd::float8",
                &[&token],
            )
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(false);
        };
        let day: NaiveDate = row.try_get(0)?;
        let amount: f64 = row.try_get(1)?;
        tx.execute(
            "UPDATE daily_spend SET reserved_usd = greatest(reserved_usd - $2::float8::numeric, 0)
              WHERE day = $1",
            &[&day, &amount],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Today's reserved spend (UTC).
    pub async fn spend_today(&self) -> StoreResult<SpendToday> {
        let client = self.conn("spend_today").await?;
        let row = client
            .query_one(
                "SELECT (now() AT TIME ZONE 'UTC')::date,
                        coalesce((SELECT reserved_usd::float8 FROM daily_spend
                                   WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)",
                &[],
            )
            .await?;
        Ok(SpendToday {
            day: row.try_get(0)?,
            reserved_usd: row.try_get(1)?,
        })
    }
}

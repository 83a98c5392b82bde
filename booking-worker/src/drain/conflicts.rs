//! Holds the ledger refused: resolved at the ledger's word (see [`Drainer::resolve`]).
//!
//! Keys: the seat keys `requeue.lua` touches and the refused request's hash.

use std::collections::HashSet;

use proto::RequestId;

use super::line::{self, Entry};
use super::sink::{self, Refused};
use super::{DrainError, Drainer, ended};
use ledger::{ClaimState, Conflict, Decision};
use proto::wire::queue::RequestState;

impl Drainer {
    /// Holds the ledger refused (Redis thought a seat free that the ledger gives to
    /// another request). First the ended holds waiting on the changes stream reach
    /// the ledger and the refused holds are written again: a release the ledger had
    /// not heard of yet is the usual cause. What is still refused is a true
    /// divergence: Redis takes the ledger's owner for those seats (restoring its
    /// hold if Redis lost it), so the next fan is not refused the same seat, and the
    /// refused request goes back in line, decided again at the head of the next
    /// batch against what is truly free.
    pub(super) async fn resolve(&mut self, refused: Refused) -> Result<(), DrainError> {
        if refused.conflicts.is_empty() {
            return Ok(());
        }
        let epoch = self.lease.epoch();
        self.apply_changes().await?;
        let still = ledger::record(&self.pool, self.event_id, epoch, &refused.decisions).await?;
        let refused_ids: HashSet<RequestId> = still.iter().map(|c| c.request_id).collect();
        let (again, taken): (Vec<&Entry>, Vec<&Entry>) = refused
            .entries
            .iter()
            .partition(|e| refused_ids.contains(&e.request_id));
        let taken_ids: Vec<&str> = taken.iter().map(|e| e.stream_id.as_str()).collect();
        line::ack(
            &mut self.redis,
            &self.keys.stream(self.event_id),
            &taken_ids,
        )
        .await?;
        let accepted: Vec<Decision> = refused
            .decisions
            .iter()
            .filter(|d| !refused_ids.contains(&d.request_id))
            .cloned()
            .collect();
        sink::publish(&mut self.redis, &self.keys, self.event_id, &accepted).await?;
        for conflict in &still {
            self.requeue(conflict).await?;
        }
        self.retry.extend(again.into_iter().cloned());
        Ok(())
    }

    /// Carries the ended holds on the changes stream into the ledger; `None` when
    /// the lease was lost.
    pub(super) async fn apply_changes(&mut self) -> Result<Option<usize>, DrainError> {
        let lease = self.lease.value().to_owned();
        ended::apply_changes(
            &mut self.redis,
            &self.pool,
            &self.keys,
            self.event_id,
            &lease,
            self.lease.epoch(),
            &self.consumer,
        )
        .await
    }

    /// Runs `requeue.lua` for one refused hold, with its seats' ledger owners.
    async fn requeue(&mut self, conflict: &Conflict) -> Result<(), DrainError> {
        let owner_ids: Vec<RequestId> = {
            let mut ids: Vec<RequestId> = conflict.taken.iter().map(|c| c.request_id).collect();
            ids.sort_by_key(|id| id.as_uuid());
            ids.dedup();
            ids
        };
        let owners = ledger::requests(&self.pool, &owner_ids).await?;
        let mut invocation = proto::scripts::REQUEUE.key(self.keys.seat_states(self.event_id));
        invocation
            .key(self.keys.seat_counts(self.event_id))
            .key(self.keys.holds(self.event_id))
            .key(self.keys.fan_seats(self.event_id))
            .key(self.keys.row_free(self.event_id))
            .key(self.keys.fans(self.event_id))
            .key(self.keys.request(self.event_id, conflict.request_id))
            .key(self.keys.section_holds(self.event_id))
            .arg(conflict.request_id.to_string());
        let mut args: Vec<String> = Vec::new();
        let mut count = 0;
        for owner in &owners {
            // The ledger's claims of this owner: its row's seats, sold or held.
            let claims: Vec<&ledger::Claim> = conflict
                .taken
                .iter()
                .filter(|c| c.request_id == owner.request_id)
                .collect();
            let Some(first) = claims.first() else {
                continue;
            };
            invocation.key(self.keys.request(self.event_id, owner.request_id));
            count += 1;
            args.push(owner.request_id.to_string());
            args.push(owner.fan_id.to_string());
            // A held claim of a request that is paying is restored as paying, so its
            // payment can still complete.
            args.push(
                match (first.state, owner.state) {
                    (ClaimState::Held, RequestState::Paying) => RequestState::Paying.as_str(),
                    (claim, _) => claim.as_str(),
                }
                .to_owned(),
            );
            args.push(
                first
                    .expires_at
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0)
                    .to_string(),
            );
            args.push(owner.seats.join(" "));
        }
        invocation.arg(count);
        for arg in &args {
            invocation.arg(arg);
        }
        let given: i64 = invocation.invoke_async(&mut self.redis).await?;
        metrics::counter!("onsale_ledger_conflicts_total").increment(1);
        tracing::error!(event_id = %self.event_id, request = %conflict.request_id, seats_given = given,
            "the ledger refused a hold redis granted: redis took the ledger's owners and the request is decided again");
        Ok(())
    }
}

//! The synthetic line the sockets watch, written straight into Redis (the benchmark
//! measures the fan-out, not the farm), and its moves, made the way a booking
//! worker makes them.
//!
//! | key | what this writes |
//! |---|---|
//! | `<p>:{ev:<id>}:req:<request>` | per socket: `fan`, `kind` best, `qty` 2, `state` queued, `created`, `number` |
//! | `<p>:request:<request>` | per socket: the event id |
//! | `<p>:{ev:<id>}:fans` | fan → request id |
//! | `<p>:{ev:<id>}:next` | the last queue number |
//! | `<p>:{ev:<id>}:sale` | `state` open, `served`, `admission_per_second` 1000 |
//! | `<p>:{ev:<id>}:counts` | `available` 10000, `held` 0, `sold` 0, `version` 1 |
//! | `<p>:{ev:<id>}:live` | a `batch` message per move |

use anyhow::Context;
use proto::EventId;
use proto::wire::queue::{RequestState, SaleState};

use super::wire;
use crate::setup::{self, Stack};

/// Commands per pipeline: ~1000 keeps each round trip well inside the connection's
/// 500 ms response timeout while paying the round trip once per thousand.
const PIPELINE: u64 = 1000;

/// An event (in Postgres as the other benchmarks make one: the realtime node looks
/// it and its sale up there) whose line holds one request per socket: socket `i`
/// follows the request numbered `offset + i + 1`.
pub async fn create(
    stack: &mut Stack,
    run: u64,
    sockets: u64,
    offset: u64,
) -> anyhow::Result<EventId> {
    // 10 × 20 × 50 = 10,000 seats: the seat map agrees with the counts written below.
    let venue_id = setup::venue(&stack.pool, 10, 20, 50).await?;
    let event = setup::event(stack, venue_id, 8).await?;
    let created = chrono::Utc::now().timestamp_millis();
    let progress = setup::bar(sockets, "line");
    let mut first = 0;
    while first < sockets {
        let last = (first + PIPELINE / 2).min(sockets);
        let mut pipe = redis::pipe();
        let mut bindings = Vec::with_capacity(2 * (last - first) as usize);
        for index in first..last {
            let (fan, request) = (wire::fan(run, index), wire::request(run, index));
            pipe.hset_multiple(
                stack.keys.request(event, request),
                &[
                    ("fan", fan.to_string()),
                    ("kind", "best".to_owned()),
                    ("qty", "2".to_owned()),
                    ("state", RequestState::Queued.as_str().to_owned()),
                    ("created", created.to_string()),
                    ("number", (offset + index + 1).to_string()),
                ],
            )
            .ignore();
            pipe.set(stack.keys.request_index(request), event.to_string())
                .ignore();
            bindings.push((fan.to_string(), request.to_string()));
        }
        pipe.hset_multiple(stack.keys.fans(event), &bindings)
            .ignore();
        let () = pipe
            .query_async(&mut stack.redis)
            .await
            .context("writing the line")?;
        progress.inc(last - first);
        first = last;
    }
    progress.finish();
    let () = redis::pipe()
        .set(stack.keys.next_number(event), offset + sockets)
        .ignore()
        .hset_multiple(
            stack.keys.sale(event),
            &[
                (proto::sale_hash::STATE, SaleState::Open.as_str()),
                (proto::sale_hash::SERVED, "0"),
                (proto::sale_hash::ADMISSION_PER_SECOND, "1000"),
            ],
        )
        .ignore()
        .hset_multiple(
            stack.keys.seat_counts(event),
            &[
                ("available", 10_000),
                ("held", 0),
                ("sold", 0),
                ("version", 1),
            ],
        )
        .ignore()
        .query_async(&mut stack.redis)
        .await
        .context("opening the sale")?;
    Ok(event)
}

/// A move of the line to `served`, as a booking worker makes one: the sale's
/// `served`, then a `batch` on the live channel. Returns how many subscribers the
/// message reached (one per node following the event).
pub async fn advance(stack: &mut Stack, event: EventId, served: u64) -> anyhow::Result<i64> {
    let message = proto::wire::live::Published::Batch {
        served,
        decided: Vec::new(),
    };
    let (receivers,): (i64,) = redis::pipe()
        .hset(stack.keys.sale(event), proto::sale_hash::SERVED, served)
        .ignore()
        .add_command(message.publish(&stack.keys, event))
        .query_async(&mut stack.redis)
        .await
        .context("moving the line")?;
    Ok(receivers)
}

/// Back to the start, for the next phase's fresh sockets.
pub async fn rewind(stack: &mut Stack, event: EventId) -> anyhow::Result<()> {
    let () = redis::cmd("HSET")
        .arg(stack.keys.sale(event))
        .arg(proto::sale_hash::SERVED)
        .arg(0)
        .query_async(&mut stack.redis)
        .await
        .context("rewinding the line")?;
    Ok(())
}

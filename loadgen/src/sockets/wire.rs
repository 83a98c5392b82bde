//! What the benchmark's processes agree on: the ids each socket's fan and request
//! get, the lines the helper processes print for the parent, the clock receipts are
//! stamped with, and the WebSocket buffer sizes.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use proto::{RequestId, UserId};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Starts every line a helper process prints for the parent; anything else on its
/// stdout (a log line) is passed through to the terminal.
pub const MARKER: &str = "@sockets ";

/// Latencies are recorded in microseconds, up to two minutes.
pub const LATENCY_MAX_MICROS: u64 = 120_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("valid histogram bounds")
}

/// A histogram as `(value, count)` pairs: JSON-friendly, and recording each pair
/// back into a histogram of the same bounds rebuilds it exactly.
pub fn histogram_pairs(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

pub fn add_pairs(histogram: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        histogram.saturating_record_n(value, count);
    }
}

/// Nanoseconds since the Unix epoch, the clock that moves and receipts are stamped
/// with. The parent stamps a move and the client processes stamp receipts, so the
/// clock has to mean the same in every process: CLOCK_REALTIME is one kernel clock
/// shared by all processes on the machine (std's `Instant` is monotonic but cannot
/// be handed to another process). Its one hazard, a step of the wall clock during a
/// run, would show as receipts stamped before their move; the clients count those
/// and the report shows the count.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The fan that socket `index` of run `run` connects as. Ids are derived, not
/// stored, so the parent (which writes the line) and the client processes (which
/// sign the tokens) agree without passing 100,000 ids around.
pub fn fan(run: u64, index: u64) -> UserId {
    UserId(derived(run, 1, index))
}

/// The request socket `index` follows.
pub fn request(run: u64, index: u64) -> RequestId {
    RequestId(derived(run, 2, index))
}

/// A version-4-shaped UUID from (run, kind, index): 7 bytes of the run, a kind
/// byte, then the index (below 2^56, so the variant bits overwrite only zeros).
fn derived(run: u64, kind: u8, index: u64) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    bytes[..7].copy_from_slice(&run.to_be_bytes()[1..]);
    bytes[7] = kind;
    bytes[8..].copy_from_slice(&index.to_be_bytes());
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The buffers a realtime node gives a socket (1 KiB read buffer, writes flushed
/// at once, frames of at most 4 KiB), for the bare baseline server: the baseline has
/// to pay for what the realtime node pays for, or the memory comparison says little.
pub fn server_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(4096))
        .max_frame_size(Some(4096))
}

/// Client sockets keep small buffers too: at tungstenite's default 128 KiB read
/// buffer, 100,000 client sockets would take 13 GB of the machine's 24.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 << 10))
}

/// What a client process tells the parent, one JSON line each after [`MARKER`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClientReport {
    /// Every 250 ms.
    Status(Status),
    /// Once, after the parent's `end`.
    Summary(Summary),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    /// Sockets whose connection attempt finished, either way.
    pub attempted: usize,
    pub connected: usize,
    pub failed: usize,
    /// The first connection failure, as the server or the kernel worded it.
    pub first_error: Option<String>,
    /// Sockets that received their first `position`.
    pub ready: usize,
    /// Sockets that closed or failed after connecting.
    pub dropped: usize,
    pub first_drop: Option<String>,
    /// The latest move the parent announced (0: none yet), and how many sockets
    /// have received its position (or a later one).
    pub latest_move: u32,
    pub have_latest: usize,
}

impl Status {
    /// Adds another client's counts; the first failures stay the first seen.
    /// `latest_move` and `have_latest` are left to the caller: they add up only
    /// across clients that have heard of the same move.
    pub fn add(&mut self, other: &Status) {
        self.attempted += other.attempted;
        self.connected += other.connected;
        self.failed += other.failed;
        self.ready += other.ready;
        self.dropped += other.dropped;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        if self.first_drop.is_none() {
            self.first_drop.clone_from(&other.first_drop);
        }
    }

    /// Sockets still open.
    pub fn alive(&self) -> usize {
        self.connected.saturating_sub(self.dropped)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    pub moves: Vec<MoveReport>,
    /// Receipts stamped before their move was made: the wall clock stepped.
    pub before_move: u64,
    /// `position` messages whose `queue_number` was not the socket's.
    pub wrong_number: u64,
    pub status: Status,
}

/// How one move reached one client's sockets.
#[derive(Debug, Serialize, Deserialize)]
pub struct MoveReport {
    pub number: u32,
    /// Connected sockets that received the move's position (or a later one)...
    pub have: u64,
    /// ...and those that never did.
    pub missing: u64,
    /// Microseconds from the move to each receipt, as [`histogram_pairs`].
    pub latency: Vec<(u64, u64)>,
}

/// What the parent writes to a client's stdin, one per line.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Move `number` set `served` to this at `at_ns` ([`now_ns`]).
    Move {
        number: u32,
        served: u64,
        at_ns: u64,
    },
    /// Report and exit.
    End,
}

impl Command {
    pub fn line(&self) -> String {
        match self {
            Command::Move {
                number,
                served,
                at_ns,
            } => format!("move {number} {served} {at_ns}\n"),
            Command::End => "end\n".to_owned(),
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        match words.next()? {
            "move" => Some(Command::Move {
                number: words.next()?.parse().ok()?,
                served: words.next()?.parse().ok()?,
                at_ns: words.next()?.parse().ok()?,
            }),
            "end" => Some(Command::End),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_distinct_per_run_kind_and_index() {
        let ids = [
            fan(7, 0).as_uuid(),
            fan(7, 1).as_uuid(),
            fan(8, 0).as_uuid(),
            request(7, 0).as_uuid(),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(fan(7, 99_999), fan(7, 99_999));
        assert_eq!(fan(7, 3).as_uuid().get_version_num(), 4);
    }

    #[test]
    fn commands_survive_a_line() {
        for command in [
            Command::Move {
                number: 3,
                served: 3000,
                at_ns: 1_764_000_000_123_456_789,
            },
            Command::End,
        ] {
            assert_eq!(Command::parse(&command.line()), Some(command));
        }
        assert_eq!(Command::parse("move 1 x 2"), None);
    }

    #[test]
    fn histogram_pairs_rebuild_the_histogram() {
        let mut histogram = latency_histogram();
        for v in [1, 5, 900, 1_000, 1_001, 250_000, 4_000_000] {
            histogram.record(v).unwrap();
        }
        let mut copy = latency_histogram();
        add_pairs(&mut copy, &histogram_pairs(&histogram));
        assert_eq!(copy.len(), histogram.len());
        assert_eq!(copy.max(), histogram.max());
        assert_eq!(
            copy.value_at_quantile(0.5),
            histogram.value_at_quantile(0.5)
        );
    }
}

//! What a phase measured, and how the run reports it.

use anyhow::bail;
use hdrhistogram::Histogram;

use super::Kind;
use super::procs::Kernel;
use super::wire::Status;

/// What one phase measured.
pub struct Phase {
    pub kind: Kind,
    /// The clients' statuses added up, as they stood at the end.
    pub status: Status,
    pub connect_seconds: f64,
    pub rss_idle_kib: u64,
    pub rss_connected_kib: u64,
    pub rss_after_moves_kib: u64,
    pub kernel_idle: Kernel,
    pub kernel_connected: Kernel,
    /// Microseconds from each move to each socket's receipt of it.
    pub latency: Histogram<u64>,
    /// Per move, the slowest socket's latency: when the whole line had moved.
    pub whole_line: Vec<Option<u64>>,
    pub missing: u64,
    pub before_move: u64,
    pub wrong_number: u64,
    /// Subscribers each move's message reached.
    pub receivers: Vec<i64>,
}

impl Phase {
    pub fn rss_per_socket(&self) -> f64 {
        self.rss_connected_kib.saturating_sub(self.rss_idle_kib) as f64 * 1024.0
            / self.status.connected.max(1) as f64
    }

    pub fn report(&self, asked: u64) {
        let name = self.kind.name();
        let s = &self.status;
        let connections = s.connected.max(1) as f64;
        let mib = |kib: u64| kib as f64 / 1024.0;
        println!(
            "{name}: {}/{asked} sockets connected, {} failed{}; {:.0} connections/s ({:.1} s); \
             {} got a first position; {} dropped later{}",
            s.connected,
            s.failed,
            s.first_error
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            s.connected as f64 / self.connect_seconds.max(1e-3),
            self.connect_seconds,
            s.ready,
            s.dropped,
            s.first_drop
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
        );
        println!(
            "{name}: server RSS {:.1} MiB idle, {:.1} MiB holding the sockets: {:.2} KiB per idle socket; \
             {:.1} MiB after the moves ({:.2} KiB per socket)",
            mib(self.rss_idle_kib),
            mib(self.rss_connected_kib),
            self.rss_per_socket() / 1024.0,
            mib(self.rss_after_moves_kib),
            self.rss_after_moves_kib.saturating_sub(self.rss_idle_kib) as f64 / connections,
        );
        let (before, after) = (self.kernel_idle, self.kernel_connected);
        let pages = after.tcp_pages.saturating_sub(before.tcp_pages);
        let slab = after.slab_kib.saturating_sub(before.slab_kib);
        println!(
            "{name}: kernel, both ends of each connection: TCP sockets {} -> {} ({} -> {} in TIME_WAIT); \
             TCP buffer memory {} -> {} pages of 4 KiB (+{:.1} MiB, {:.0} B per connection); \
             slab +{:.1} MiB ({:.2} KiB per connection)",
            before.tcp_sockets,
            after.tcp_sockets,
            before.tcp_time_wait,
            after.tcp_time_wait,
            before.tcp_pages,
            after.tcp_pages,
            (pages * 4096) as f64 / 1048576.0,
            (pages * 4096) as f64 / connections,
            mib(slab),
            slab as f64 / connections,
        );
        let ms = |micros: u64| micros as f64 / 1000.0;
        let l = &self.latency;
        let mut whole: Vec<u64> = self.whole_line.iter().flatten().copied().collect();
        whole.sort_unstable();
        let incomplete = self.whole_line.len() - whole.len();
        println!(
            "{name}: move -> socket p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms over {} \
             deliveries ({} missing); whole line moved (its slowest socket): median {:.1} ms, max {:.1} ms \
             over {} moves ({incomplete} never complete)",
            ms(l.value_at_quantile(0.50)),
            ms(l.value_at_quantile(0.99)),
            ms(l.value_at_quantile(0.999)),
            ms(l.max()),
            l.len(),
            self.missing,
            ms(whole.get(whole.len() / 2).copied().unwrap_or(0)),
            ms(whole.last().copied().unwrap_or(0)),
            self.whole_line.len(),
        );
        let mut receivers = self.receivers.clone();
        receivers.dedup();
        println!(
            "{name}: each move reached {receivers:?} subscribers; {} receipts stamped before their \
             move (clock steps); {} positions for another queue number",
            self.before_move, self.wrong_number
        );
    }

    /// Fails the run when the phase did not hold, or did not feed, every socket.
    pub fn verdict(&self, asked: u64) -> anyhow::Result<()> {
        let name = self.kind.name();
        let s = &self.status;
        if (s.connected as u64) < asked {
            bail!(
                "{name}: only {} of {asked} sockets connected; first failure: {}",
                s.connected,
                s.first_error.as_deref().unwrap_or("none recorded")
            );
        }
        if s.ready < s.connected {
            bail!(
                "{name}: {} sockets never received a position",
                s.connected - s.ready
            );
        }
        if self.missing > 0 || s.dropped > 0 {
            bail!(
                "{name}: {} deliveries never arrived; {} sockets dropped (first: {})",
                self.missing,
                s.dropped,
                s.first_drop.as_deref().unwrap_or("none")
            );
        }
        Ok(())
    }
}

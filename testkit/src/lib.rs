//! Servers of a test's (or a load run's) own, which it may crash and restart: the
//! shared ones cannot be restarted under the other tests' feet.
//!
//! - [`PrivatePostgres`]: `initdb` into a temporary directory, `pg_ctl` on a free
//!   port; crashed with an immediate stop (no checkpoint, every connection cut,
//!   crash recovery on the next start).
//! - [`PrivateBroker`]: the tansu Kafka-protocol broker with in-memory storage on a
//!   free port; killed and started again, it has lost every topic and offset.
//!
//! - [`PrivateRedis`]: `redis-server` with AOF in a temporary directory, stopped and
//!   started again on the same port.
//! - [`PrivateRedisCluster`]: three masters in cluster mode, each of which may be
//!   killed and started again.
//!
//! All panic with what to install when a program is missing: they are for tests
//! and benchmarks, which `deploy/test` runs with everything installed.
//!
//! And [`qr`]: reading back a QR code drawn as a PNG (an email's ticket).

mod broker;
mod postgres;
pub mod qr;
mod redis;
mod redis_cluster;

pub use broker::PrivateBroker;
pub use postgres::PrivatePostgres;
pub use redis::PrivateRedis;
pub use redis_cluster::PrivateRedisCluster;

/// Every service a farm deploys, each its own binary, in the order they start.
pub const SERVICES: [&str; 6] = [
    "gateway",
    "waiting-room",
    "booking-worker",
    "payments",
    "notifier",
    "realtime",
];

/// The Redis the tests share: `REDIS_URL`, which `deploy/test` sets (to a private
/// server unless one is given). No default: a test must not wander onto a Redis
/// nobody named.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .expect("REDIS_URL must name a Redis; run the tests through deploy/test")
}

/// The Postgres server `DATABASE_URL` names, with its database replaced by
/// `database` (a `#[sqlx::test]`'s own: `pool.connect_options().get_database()`),
/// for a process a test starts beside it.
pub fn database_url(database: &str) -> String {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name a Postgres; run the tests through deploy/test");
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL ends in /<database>");
    format!("{server}/{database}")
}

/// A TCP port on 127.0.0.1 that nothing listens on right now, for a server a
/// test starts a moment later.
///
/// It is chosen below the kernel's ephemeral range (`ip_local_port_range`), where
/// no outgoing connection is ever given a local port: a port from `bind(0)` is an
/// ephemeral one, and in the moment before the server binds it (or while a test
/// has killed the server to start it again on the same port) any connection this
/// machine opens may take it. Ports handed out in this process are not handed out
/// again, so two tests of one binary never race for one port.
pub fn free_port() -> u16 {
    free_port_where(|_| true)
}

/// [`free_port`] whose `also(port)` holds too (a cluster node's bus port, say).
pub(crate) fn free_port_where(also: impl Fn(u16) -> bool) -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let (low, high) = unclaimed_ports();
    let span = u64::from(high - low);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..10_000 {
        let port = low + (random() % span) as u16;
        if !given.contains(&port) && bindable(port) && also(port) {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {low}..{high} after 10000 tries")
}

/// Whether 127.0.0.1:`port` can be bound right now.
pub(crate) fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The ports no outgoing connection takes: from 10000 up to the start of the
/// ephemeral range (Linux's default 32768 when it cannot be read).
pub(crate) fn unclaimed_ports() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    (10_000, ephemeral_low.max(24_000))
}

/// A random number from the standard library's per-process hash keys and a
/// counter: enough to spread the picks, no cryptography asked of it.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, what: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{what} did not listen on 127.0.0.1:{port} within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

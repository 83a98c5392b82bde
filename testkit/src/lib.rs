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

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
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

//! The booking-worker processes of a chaos run, and the nemesis that strikes them.
//!
//! Faults are drawn from the run's seeded generator, so a seed names a schedule
//! (the moments they land on still depend on the machine's timing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use rand::Rng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use crate::setup::Stack;

/// Where the booking-worker binary is: `--worker-bin`, or beside this program (or
/// beside the directory of a test binary, `target/<profile>/deps`).
pub fn worker_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("locating this program")?;
    let mut dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.pop();
    }
    let candidate = dir.join("booking-worker");
    if !candidate.exists() {
        bail!(
            "no booking-worker binary at {} (build it: cargo build -p booking-worker, or pass --worker-bin)",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// One booking-worker process; killed when dropped.
struct Process {
    name: String,
    child: Child,
    stopped: bool,
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.stopped {
            let _ = signal(self.child.id(), "CONT");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// The farm: `size` worker processes, as deployed, on the run's key prefix.
pub struct Farm {
    binary: PathBuf,
    database_url: String,
    redis_url: String,
    prefix: String,
    horizon_ms: u64,
    processes: Vec<Process>,
    spawned: usize,
}

impl Farm {
    pub fn start(
        stack: &Stack,
        binary: PathBuf,
        size: usize,
        horizon_ms: u64,
    ) -> anyhow::Result<Self> {
        let mut farm = Self {
            binary,
            database_url: stack.database_url.clone(),
            redis_url: stack.redis_url.clone(),
            prefix: stack.keys.prefix().to_owned(),
            horizon_ms,
            processes: Vec::new(),
            spawned: 0,
        };
        for _ in 0..size {
            farm.spawn()?;
        }
        Ok(farm)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.spawned += 1;
        let name = format!("chaos-{}", self.spawned);
        // The workers' Postgres sessions carry a name of their own, so the nemesis can
        // cut exactly those.
        let separator = if self.database_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let database_url = format!(
            "{}{separator}application_name={WORKER_APPLICATION}",
            self.database_url
        );
        let child = Command::new(&self.binary)
            .env("DATABASE_URL", database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("ONSALE_LISTEN", "127.0.0.1:0")
            .env("ONSALE_NAME", &name)
            .env("ONSALE_REDIS__KEY_PREFIX", &self.prefix)
            .env("ONSALE_DATABASE__MAX_CONNECTIONS", "4")
            .env("ONSALE_DRAIN__LEASE_MS", "1000")
            .env("ONSALE_DRAIN__BLOCK_MS", "50")
            .env("ONSALE_DRAIN__SWEEP_INTERVAL_MS", "100")
            .env(
                "ONSALE_DRAIN__SOLD_OUT_HORIZON_MS",
                self.horizon_ms.to_string(),
            )
            .env("ONSALE_DISCOVER_INTERVAL_MS", "50")
            .env(
                "RUST_LOG",
                std::env::var("CHAOS_WORKER_LOG").unwrap_or_else(|_| "error".into()),
            )
            // The workers log to standard output; shown when asked for
            // (CHAOS_WORKER_LOG=error,drain_trace=debug shows every batch).
            .stdout(if std::env::var_os("CHAOS_WORKER_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.processes.push(Process {
            name,
            child,
            stopped: false,
        });
        Ok(())
    }

    /// Resumes every stopped worker and replaces every dead one: the faults are over.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            if process.stopped {
                signal(process.child.id(), "CONT")?;
                process.stopped = false;
            }
        }
        Ok(())
    }
}

/// A Redis of the run's own (`--own-redis`), with an append-only file fsynced on
/// every write, which the nemesis restarts: SIGKILL, then the same port and data.
pub struct OwnRedis {
    port: u16,
    dir: PathBuf,
    child: Child,
}

/// A Redis Cluster of the run's own (`--own-cluster`): three masters with a replica
/// each, which the nemesis fails over, losing writes: the event's master is cut off
/// from its replica (frozen first, so it cannot take them in), takes writes for a
/// moment, and is killed; the replica, thawed, takes its slots without them; the old
/// master comes back as its replica.
pub struct OwnCluster {
    /// Driven from blocking threads (its calls wait on `redis-cli` and on the
    /// cluster's state), never from the runtime's workers.
    cluster: std::sync::Arc<std::sync::Mutex<testkit::PrivateRedisCluster>>,
    url: String,
    /// A key of the event: its master is the one failed over.
    pub event_key: Option<String>,
}

impl OwnCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let cluster =
            tokio::task::spawn_blocking(|| testkit::PrivateRedisCluster::start_with_replicas(1))
                .await
                .context("starting the run's own cluster")?;
        Ok(Self {
            url: cluster.url(),
            cluster: std::sync::Arc::new(std::sync::Mutex::new(cluster)),
            event_key: None,
        })
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Runs `step` on the cluster on a blocking thread.
    async fn on_cluster<T: Send + 'static>(
        &self,
        step: impl FnOnce(&mut testkit::PrivateRedisCluster) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || {
            let mut cluster = cluster
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            step(&mut cluster)
        })
        .await
        .context("a cluster step panicked")
    }

    /// One failover of the event's master that loses its last writes.
    async fn fail_over(&mut self, rng: &mut StdRng) -> anyhow::Result<()> {
        let Some(key) = self.event_key.clone() else {
            return Ok(());
        };
        let cut_for = Duration::from_millis(rng.random_range(100..800));
        let owner = key.clone();
        let master = self.on_cluster(move |c| c.port_of(&owner)).await?;
        let replica = self.on_cluster(move |c| c.replica_of(master)).await?;
        self.on_cluster(move |c| {
            c.pause(replica);
            c.cut_replicas_of(master);
        })
        .await?;
        tokio::time::sleep(cut_for).await;
        self.on_cluster(move |c| {
            c.kill(master);
            c.resume(replica);
        })
        .await?;
        let started = tokio::time::Instant::now();
        loop {
            let owner = key.clone();
            if self.on_cluster(move |c| c.port_of(&owner)).await? != master {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("no replica took over from {master} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The old master comes back, as the new one's replica.
        self.on_cluster(move |c| c.start_again(master)).await?;
        Ok(())
    }
}

/// The run's own Redis, whichever kind.
pub enum Own {
    Server(OwnRedis),
    Cluster(OwnCluster),
}

impl Own {
    /// The fault this Redis takes: a restart, or a failover; its name.
    async fn strike(&mut self, rng: &mut StdRng) -> anyhow::Result<&'static str> {
        match self {
            Own::Server(redis) => redis.restart().await.map(|()| RESTART),
            Own::Cluster(cluster) => cluster.fail_over(rng).await.map(|()| FAILOVER),
        }
    }

    /// Seconds between two such faults at least.
    fn spacing(&self) -> u64 {
        match self {
            Own::Server(_) => 6,
            Own::Cluster(_) => 15,
        }
    }
}

impl OwnRedis {
    pub async fn start(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = testkit::free_port();
        let child = Self::spawn(port, &dir)?;
        let mut redis = Self { port, dir, child };
        redis.wait_ready().await?;
        Ok(redis)
    }

    fn spawn(port: u16, dir: &Path) -> anyhow::Result<Child> {
        Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting redis-server (Debian: apt-get install redis-server)")
    }

    /// Until it answers PING (it refuses with LOADING while it reads its file).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        for _ in 0..200 {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server on port {} did not come up", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (nothing flushed on the way out) and starts it again on its data.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill().context("SIGKILL redis-server")?;
        self.child.wait().context("reaping redis-server")?;
        self.child = Self::spawn(self.port, &self.dir)?;
        self.wait_ready().await
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kinds of fault the nemesis injects, counted in the report.
pub const FAILOVER: &str =
    "redis failover losing writes (replica cut off, master killed, replica promoted)";
pub const STOP: &str = "worker SIGSTOP (longer than its lease, then SIGCONT)";
pub const KILL: &str = "worker SIGKILL (and a new worker)";
pub const LOSS: &str = "every Redis key of the event deleted mid-sale, then restored";
pub const CUT: &str = "the workers' Postgres connections cut (pg_terminate_backend)";
pub const RESTART: &str = "Redis killed (SIGKILL) and restarted on its append-only file";
pub const PG_RESTART: &str = "Postgres crashed (immediate stop) and restarted";

/// The Postgres `application_name` of the chaos run's workers.
const WORKER_APPLICATION: &str = "onsale-chaos-worker";

/// Ends every Postgres session of the run's workers, mid-transaction or idle, as a
/// network cut or a failover would; returns how many.
async fn cut_worker_connections(pool: &sqlx::PgPool) -> anyhow::Result<usize> {
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(WORKER_APPLICATION)
    .fetch_all(pool)
    .await?;
    Ok(cut.into_iter().filter(|ok| *ok).count())
}

/// The operator's side of a key loss: restores the event through the gateway
/// (pausing the sale) and resumes it.
pub struct Operator {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
    pub redis: platform::store::Redis,
    pub keys: proto::Keys,
    pub event_id: proto::EventId,
}

impl Operator {
    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<()> {
        let url = format!("{}/v1/ops/events/{}/{path}", self.base, self.event_id);
        let response = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("POST {url} answered {status}: {text}");
        }
        Ok(())
    }

    /// Deletes every key of the event at once, in one command (a flush of its slot,
    /// a failover to a replica that never had them), waits `gap`, then restores and
    /// resumes the sale. Returns the keys lost.
    async fn lose_and_restore(&mut self, gap: Duration) -> anyhow::Result<usize> {
        let pattern = format!(
            "{}:{}:*",
            self.keys.prefix(),
            proto::Keys::event_tag(self.event_id)
        )
        .replace('{', "\\{")
        .replace('}', "\\}");
        // One script: the event's keys go together, at one instant, as a lost slot's
        // do (keys evicted one by one are another failure: the stack runs Redis
        // without eviction). A tool's script, on a single Redis: it names its keys by
        // pattern, which a cluster would not allow.
        let lost: usize = redis::Script::new(
            r"
            local cursor, lost = '0', 0
            repeat
              local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 5000)
              cursor = page[1]
              if #page[2] > 0 then lost = lost + redis.call('DEL', unpack(page[2])) end
            until cursor == '0'
            return lost
            ",
        )
        .arg(&pattern)
        .invoke_async(&mut self.redis)
        .await?;
        tokio::time::sleep(gap).await;
        self.post("restore", serde_json::json!({"pause": true}))
            .await?;
        self.post("resume", serde_json::json!({})).await?;
        Ok(lost)
    }
}

/// Strikes the farm until `stop`: every 0.3–1.5 s one fault, drawn from `rng` (a
/// worker stopped past its lease, a worker killed, the workers' Postgres
/// connections cut);
/// with an `operator`, now and then (at most every 5 s, at least every 10 s) the
/// event's Redis keys are lost and restored; with the run's own Redis or Postgres,
/// now and then (at most every 6 s, at least every 12 s) it is crashed and
/// restarted. Returns how many of each kind it injected.
#[allow(
    clippy::too_many_arguments,
    reason = "each fault's target, named at the call"
)]
/// A fault's moment, on stderr: the timeline a violation is read against.
fn struck(fault: &str) {
    eprintln!(
        "chaos: {} {fault}",
        chrono::Utc::now().format("%H:%M:%S%.3f")
    );
}

pub async fn nemesis(
    farm: &mut Farm,
    rng: &mut StdRng,
    pool: &sqlx::PgPool,
    mut operator: Option<&mut Operator>,
    mut own_redis: Option<&mut Own>,
    own_postgres: Option<std::sync::Arc<testkit::PrivatePostgres>>,
    stop: CancellationToken,
) -> anyhow::Result<BTreeMap<&'static str, usize>> {
    let mut last_loss = tokio::time::Instant::now();
    let mut last_restart = tokio::time::Instant::now();
    let mut last_pg_restart = tokio::time::Instant::now();
    let mut last_cut = tokio::time::Instant::now();
    let mut injected: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Stopped workers and when each is resumed.
    let mut resume: Vec<(tokio::time::Instant, String)> = Vec::new();
    loop {
        let pause = Duration::from_millis(rng.random_range(300..1_500));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => break,
        }
        let now = tokio::time::Instant::now();
        for (_, name) in resume.iter().filter(|(at, _)| *at <= now) {
            if let Some(process) = farm
                .processes
                .iter_mut()
                .find(|p| &p.name == name && p.stopped)
            {
                signal(process.child.id(), "CONT")?;
                process.stopped = false;
            }
        }
        resume.retain(|(at, _)| *at > now);
        let running: Vec<usize> = (0..farm.processes.len())
            .filter(|i| !farm.processes[*i].stopped)
            .collect();
        if running.is_empty() {
            continue;
        }
        let victim = running[rng.random_range(0..running.len())];
        let since_loss = last_loss.elapsed();
        if let Some(operator) = operator.as_deref_mut()
            && since_loss > Duration::from_secs(5)
            && (rng.random_bool(0.25) || since_loss > Duration::from_secs(10))
        {
            let gap = Duration::from_millis(rng.random_range(0..1_000));
            operator.lose_and_restore(gap).await?;
            last_loss = tokio::time::Instant::now();
            *injected.entry(LOSS).or_default() += 1;
            struck(LOSS);
        } else if let Some(redis) = own_redis.as_deref_mut()
            && last_restart.elapsed() > Duration::from_secs(redis.spacing())
            && (rng.random_bool(0.2)
                || last_restart.elapsed() > Duration::from_secs(2 * redis.spacing()))
        {
            let fault = redis.strike(rng).await?;
            last_restart = tokio::time::Instant::now();
            *injected.entry(fault).or_default() += 1;
            struck(fault);
        } else if let Some(postgres) = own_postgres.as_ref()
            && last_pg_restart.elapsed() > Duration::from_secs(6)
            && (rng.random_bool(0.2) || last_pg_restart.elapsed() > Duration::from_secs(12))
        {
            let postgres = postgres.clone();
            tokio::task::spawn_blocking(move || postgres.crash_and_restart())
                .await
                .context("restarting postgres")?;
            last_pg_restart = tokio::time::Instant::now();
            *injected.entry(PG_RESTART).or_default() += 1;
            struck(PG_RESTART);
        } else if rng.random_bool(0.15) || last_cut.elapsed() > Duration::from_secs(8) {
            cut_worker_connections(pool).await?;
            last_cut = tokio::time::Instant::now();
            *injected.entry(CUT).or_default() += 1;
            struck(CUT);
        } else if rng.random_bool(0.6) {
            let process = &mut farm.processes[victim];
            signal(process.child.id(), "STOP")?;
            process.stopped = true;
            let for_ms = rng.random_range(200..3_000);
            resume.push((now + Duration::from_millis(for_ms), process.name.clone()));
            *injected.entry(STOP).or_default() += 1;
            struck(STOP);
        } else {
            let mut process = farm.processes.remove(victim);
            process.child.kill().context("SIGKILL")?;
            process.child.wait().context("reaping a killed worker")?;
            drop(process);
            farm.spawn()?;
            *injected.entry(KILL).or_default() += 1;
            struck(KILL);
        }
    }
    farm.heal()?;
    Ok(injected)
}

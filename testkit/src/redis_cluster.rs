//! A private Redis Cluster of three masters (with replicas, if asked), whose nodes a
//! test may kill and start again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Three `redis-server`s in cluster mode on free ports (each also listening on its
/// port + 10000, the cluster bus), created with `redis-cli --cluster create`, with
/// `cluster-require-full-coverage no` (a dead master leaves the other slots served).
pub struct PrivateRedisCluster {
    ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl PrivateRedisCluster {
    /// Starts the three masters and waits until every one reports `cluster_state:ok`.
    pub fn start() -> Self {
        Self::start_with_replicas(0)
    }

    /// Three masters with `replicas` replicas each: a master killed for longer than
    /// the node timeout (2 s) is replaced by one of its replicas.
    pub fn start_with_replicas(replicas: usize) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "onsale-redis-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // Each node's bus listens on its port + 10000: both must be free, and
        // the bus port too must lie below the ephemeral range.
        let (_, ephemeral_low) = crate::unclaimed_ports();
        let ports: Vec<u16> = (0..3 * (1 + replicas))
            .map(|_| {
                crate::free_port_where(|port| {
                    port + 10_000 < ephemeral_low && crate::bindable(port + 10_000)
                })
            })
            .collect();
        let mut cluster = Self {
            children: ports.iter().map(|_| None).collect(),
            ports,
            dir,
        };
        for index in 0..cluster.ports.len() {
            cluster.start_node(index);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("running redis-cli --cluster create (Debian: apt-get install redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        for port in cluster.ports.clone() {
            cluster.wait_ok(port);
        }
        if replicas > 0 {
            cluster.wait_replicated(3 * replicas);
        }
        cluster
    }

    /// Until the masters report `count` replicas online (synced and streaming).
    fn wait_replicated(&self, count: usize) {
        let started = std::time::Instant::now();
        loop {
            let online: usize = self
                .ports
                .iter()
                .map(|port| {
                    cli(*port, &["INFO", "replication"])
                        .lines()
                        .filter(|line| line.starts_with("slave") && line.contains("state=online"))
                        .count()
                })
                .sum();
            if online >= count {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "{online} of {count} replicas online after 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Waits until the master on `port` has sent every write so far to at least one
    /// replica (`WAIT 1`): a test then knows a failover loses nothing.
    pub fn wait_for_replica(&self, port: u16) {
        let acknowledged: u32 = cli(port, &["WAIT", "1", "5000"])
            .trim()
            .parse()
            .unwrap_or(0);
        assert!(
            acknowledged >= 1,
            "no replica of {port} acknowledged its writes"
        );
    }

    /// `redis+cluster://` naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The port of the master that owns `key`'s slot.
    pub fn port_of(&self, key: &str) -> u16 {
        let live = self.ports[self
            .children
            .iter()
            .position(Option::is_some)
            .expect("a live master")];
        let slot: u16 = cli(live, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        let nodes = cli(live, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let owns = fields.iter().skip(8).any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                match (low.parse::<u16>(), high.parse::<u16>()) {
                    (Ok(low), Ok(high)) => (low..=high).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                let address = fields[1].split('@').next().expect("an address");
                return address
                    .rsplit_once(':')
                    .expect("host:port")
                    .1
                    .parse()
                    .expect("a port");
            }
        }
        panic!("no master owns slot {slot}: {nodes}");
    }

    /// Moves `key`'s slot, with every key in it, to the master on `to`, the way
    /// `redis-cli --cluster reshard` does: the slot is marked importing and migrating,
    /// its keys go across in `MIGRATE` batches (clients meanwhile get `ASK` for the
    /// keys already moved, `TRYAGAIN` for commands spanning both sides), then every
    /// master is told its new owner (clients get `MOVED`). Returns how many keys moved.
    pub fn move_slot(&self, key: &str, to: u16) -> usize {
        let from = self.port_of(key);
        assert_ne!(from, to, "the slot is already there");
        let slot = cli(from, &["CLUSTER", "KEYSLOT", key]).trim().to_owned();
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        ok(cli(
            to,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        ));
        ok(cli(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        ));
        let mut moved = 0;
        loop {
            let batch = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "10"]);
            let keys: Vec<&str> = batch.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().copied());
            ok(cli(from, &migrate));
            moved += keys.len();
        }
        for port in self
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| self.children[i].as_ref().map(|_| *p))
        {
            cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        moved
    }

    /// SIGKILL the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let index = self.index(port);
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the master on `port` again (its node file brings it back into the
    /// cluster with its slots) and waits until the cluster is whole.
    pub fn start_again(&mut self, port: u16) {
        let index = self.index(port);
        self.start_node(index);
        for port in self.ports.clone() {
            self.wait_ok(port);
        }
    }

    /// The port of a replica of the master on `master` (as the replicas report it).
    pub fn replica_of(&self, master: u16) -> u16 {
        *self
            .ports
            .iter()
            .find(|port| {
                self.children[self.index(**port)].is_some() && {
                    let info = cli(**port, &["INFO", "replication"]);
                    let wanted = format!("master_port:{master}");
                    info.contains("role:slave") && info.lines().any(|line| line.trim() == wanted)
                }
            })
            .unwrap_or_else(|| panic!("no replica of {master}"))
    }

    /// Freezes the node on `port` (SIGSTOP): it answers nothing and replicates
    /// nothing until [`PrivateRedisCluster::resume`].
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Cuts the master on `port` off from its replicas (`CLIENT KILL TYPE replica`):
    /// what it writes next stays in its own backlog. A paused replica cannot
    /// connect again until it is resumed.
    pub fn cut_replicas_of(&self, port: u16) {
        cli(port, &["CLIENT", "KILL", "TYPE", "replica"]);
    }

    /// Lets a paused node go on (SIGCONT).
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let child = self.children[self.index(port)]
            .as_ref()
            .expect("the node is running");
        let sent = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill {signal} {port} failed");
    }

    fn index(&self, port: u16) -> usize {
        self.ports
            .iter()
            .position(|p| *p == port)
            .expect("a master of this cluster")
    }

    fn start_node(&mut self, index: usize) {
        assert!(self.children[index].is_none(), "the node is running");
        let port = self.ports[index];
        let node = self.dir.join(port.to_string());
        std::fs::create_dir_all(&node).expect("node dir");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args([
                "--cluster-node-timeout",
                "2000",
                "--cluster-require-full-coverage",
                "no",
                // A replica takes over however long it was cut off from its master.
                "--cluster-replica-validity-factor",
                "0",
            ])
            .arg("--dir")
            .arg(&node)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting redis-server (Debian: apt-get install redis-server)");
        let started = std::time::Instant::now();
        let mut child = child;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server (cluster node) on 127.0.0.1:{port} exited ({status}) before it listened; its log is above"
                );
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "redis-server (cluster node) did not listen on 127.0.0.1:{port} within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.children[index] = Some(child);
    }

    fn wait_ok(&self, port: u16) {
        let started = std::time::Instant::now();
        while !cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the cluster node on {port} did not reach cluster_state:ok"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Panics unless a `redis-cli` reply is `OK`.
fn ok(reply: String) {
    assert_eq!(reply.trim(), "OK", "redis-cli answered {reply:?}");
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

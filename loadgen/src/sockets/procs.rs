//! The benchmark's child processes (servers and clients), and what the kernel says
//! about them: resident memory from /proc/<pid>/status, socket memory from
//! /proc/net/sockstat and /proc/meminfo.
//!
//! Children are std processes with a guard that kills and reaps them when dropped,
//! on every path out of the benchmark, errors and panics included. Their pipes are
//! read on plain threads: the workspace's tokio is built without `process`, and
//! adding it would rebuild tokio and every crate above it for everyone.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::HOST;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, ClientReport, MARKER};
use crate::joins::SECRET;
use crate::setup::Stack;

/// A child process, killed and reaped when dropped.
pub struct Child {
    inner: std::process::Child,
    what: String,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.inner.kill();
        let _ = self.inner.wait();
    }
}

impl Child {
    fn spawn(mut command: Command, what: String) -> anyhow::Result<Self> {
        let inner = command
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self { inner, what })
    }

    pub fn pid(&self) -> u32 {
        self.inner.id()
    }

    /// Fails if the process has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.inner.try_wait()? {
            Some(status) => bail!("{} exited ({status})", self.what),
            None => Ok(()),
        }
    }
}

/// A server the sockets connect to: a realtime node or a bare baseline server.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

/// Starts the realtime binary against the stack's Postgres, Redis and key prefix,
/// and waits until it answers /healthz.
pub async fn start_realtime(binary: &Path, stack: &Stack) -> anyhow::Result<Server> {
    let port = testkit::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(binary);
    command
        .env("ONSALE_LISTEN", addr.to_string())
        .env("DATABASE_URL", &stack.database_url)
        .env("REDIS_URL", &stack.redis_url)
        .env("ONSALE_REDIS__KEY_PREFIX", stack.keys.prefix())
        .env("ONSALE_AUTH__JWT_SECRET", SECRET)
        .env("ONSALE_AUTH__ISSUER", "onsale")
        .env("ONSALE_AUTH__AUDIENCE", "onsale")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut child = Child::spawn(command, format!("{} on {addr}", binary.display()))?;
    let started = Instant::now();
    loop {
        let healthy = async {
            let mut sender = crate::joins::connect(addr).await?;
            let request = Request::get("/healthz")
                .header(HOST, addr.to_string())
                .body(Full::new(Bytes::new()))?;
            anyhow::Ok(sender.send_request(request).await?.status().is_success())
        };
        if healthy.await.unwrap_or(false) {
            return Ok(Server { child, addr });
        }
        child.check_running()?;
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the realtime node on {addr} did not answer /healthz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a bare baseline server (this binary's `sockets-bare`) and waits until it
/// listens and is subscribed.
pub async fn start_bare(stack: &Stack, channel: &str, sale_key: &str) -> anyhow::Result<Server> {
    let port = testkit::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("sockets-bare")
        .args(["--listen", &addr.to_string()])
        .args(["--channel", channel])
        .args(["--sale-key", sale_key])
        .env("REDIS_URL", &stack.redis_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut child = Child::spawn(command, format!("the bare server on {addr}"))?;
    let stdout = child
        .inner
        .stdout
        .take()
        .context("the bare server's stdout")?;
    let (ready_tx, ready) = oneshot::channel();
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with(MARKER) {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            } else {
                eprintln!("{line}");
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(Ok(())) => Ok(Server { child, addr }),
        _ => {
            child.check_running()?;
            bail!("the bare server on {addr} did not get ready within 30 s")
        }
    }
}

/// What the clients' reader threads pass on.
pub enum ClientEvent {
    Report(usize, ClientReport),
    /// The client's stdout closed: it exited.
    Gone(usize),
}

/// One client process (this binary's `sockets-client`).
pub struct ClientProcess {
    // Declared first so the pipe closes before the kill: a client that still runs
    // sees its stdin end and exits by itself.
    stdin: Option<ChildStdin>,
    _child: Child,
}

impl ClientProcess {
    /// Writes one command line; a client that has gone is skipped (its absence shows
    /// in the report).
    pub fn send(&mut self, command: &wire::Command) {
        if let Some(stdin) = &mut self.stdin
            && (stdin.write_all(command.line().as_bytes()).is_err() || stdin.flush().is_err())
        {
            self.stdin = None;
        }
    }
}

/// Starts client `index` with `args` (after `sockets-client`); its reports go to
/// `events`.
pub fn start_client(
    index: usize,
    args: Vec<String>,
    events: mpsc::UnboundedSender<ClientEvent>,
) -> anyhow::Result<ClientProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("sockets-client")
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = Child::spawn(command, format!("client {index}"))?;
    let stdout = child.inner.stdout.take().context("a client's stdout")?;
    let stdin = child.inner.stdin.take();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match line.strip_prefix(MARKER) {
                Some(json) => match serde_json::from_str(json) {
                    Ok(report) => {
                        let _ = events.send(ClientEvent::Report(index, report));
                    }
                    Err(why) => eprintln!("client {index}: unreadable report ({why}): {json}"),
                },
                None => eprintln!("client {index}: {line}"),
            }
        }
        let _ = events.send(ClientEvent::Gone(index));
    });
    Ok(ClientProcess {
        stdin,
        _child: child,
    })
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    field_kib(&text, "VmRSS:").with_context(|| format!("no VmRSS in {path}"))
}

/// `<name> <n> kB` from a /proc file.
fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine's TCP sockets and the kernel memory they hold. On loopback both ends
/// of every connection are on this machine, so each connection counts twice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernel {
    /// TCP sockets in use (`inuse` of /proc/net/sockstat).
    pub tcp_sockets: u64,
    /// Connections in TIME_WAIT (`tw`): a previous phase's, whose slab is freed as
    /// they expire (60 s), which would shrink a slab difference taken across it.
    pub tcp_time_wait: u64,
    /// Pages of buffer memory charged to TCP sockets (`mem`, in pages).
    pub tcp_pages: u64,
    /// Kernel slab (`Slab:` of /proc/meminfo): the socket, file and epoll structures
    /// themselves, which `mem` does not count.
    pub slab_kib: u64,
}

pub fn kernel() -> anyhow::Result<Kernel> {
    let sockstat =
        std::fs::read_to_string("/proc/net/sockstat").context("reading /proc/net/sockstat")?;
    let tcp = sockstat
        .lines()
        .find_map(|line| line.strip_prefix("TCP:"))
        .context("no TCP line in /proc/net/sockstat")?;
    // "inuse 5 orphan 0 tw 0 alloc 7 mem 1": name, value pairs.
    let words: Vec<&str> = tcp.split_whitespace().collect();
    let value = |name: &str| -> anyhow::Result<u64> {
        let at = words
            .iter()
            .position(|w| *w == name)
            .with_context(|| format!("no {name} in /proc/net/sockstat"))?;
        words
            .get(at + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("parsing {name} in /proc/net/sockstat"))
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    Ok(Kernel {
        tcp_sockets: value("inuse")?,
        tcp_time_wait: value("tw")?,
        tcp_pages: value("mem")?,
        slab_kib: field_kib(&meminfo, "Slab:").context("no Slab in /proc/meminfo")?,
    })
}

/// The soft limit on open files this process (and so each child) has.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kib_fields_are_read_from_proc_text() {
        let status = "Name:\tx\nVmPeak:\t  2000 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(field_kib(status, "VmRSS:"), Some(1234));
        assert_eq!(field_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_machine_has_the_proc_files() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(kernel().is_ok());
    }
}

//! An SMTP sink for development and tests: a small tokio SMTP server (EHLO/HELO,
//! MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT) that keeps every message
//! it receives in memory (raw RFC 5322 text and the envelope's from and to), can be
//! awaited, optionally writes each to `DIR/<timestamp>-<n>.eml`, and can be told to
//! fail: [`Mode::Refuse`] answers `421` to new connections and `451` to `MAIL`
//! (SMTP down, a transient failure), [`Mode::Reject`] answers `550` to `RCPT` (a
//! permanent one). `notifier catch-mail` runs it as a process ([`catch_mail`]).

mod mime;
mod smtp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use mime::Part;

/// How the sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// `421` on connect, `451` on `MAIL`: try again later.
    Refuse,
    /// `550` on `RCPT`: this mailbox will never take it.
    Reject,
}

/// One message as the sink received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope's sender (`MAIL FROM`), empty for the null sender.
    pub from: String,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as sent, dot-unstuffed, CRLF line ends.
    pub data: String,
    pub received_at: DateTime<Utc>,
    /// Where it was written, when the sink has a directory.
    pub file: Option<PathBuf>,
}

/// The sink waited for more than it got.
#[derive(Debug, thiserror::Error)]
#[error("the mail sink had {got} of {wanted} {what} after {within:?}")]
pub struct WaitTimeout {
    pub what: &'static str,
    pub wanted: u64,
    pub got: u64,
    pub within: Duration,
}

struct Shared {
    mode: Mutex<Mode>,
    messages: Mutex<Vec<Received>>,
    /// How many messages were received; receivers await a count.
    received: watch::Sender<u64>,
    /// How many times the sink refused (421 or 451).
    refusals: watch::Sender<u64>,
    dir: Option<PathBuf>,
}

/// A running sink; dropping it stops the server and its connections.
pub struct MailSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MailSink {
    /// Listens on `addr` (port 0 picks a free one) and keeps messages in memory.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Self::bind_with_dir(addr, None).await
    }

    /// Like [`MailSink::bind`], also writing every message into `dir`.
    pub async fn bind_with_dir(addr: SocketAddr, dir: Option<PathBuf>) -> std::io::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)?;
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Accept),
            messages: Mutex::new(Vec::new()),
            received: watch::Sender::new(0),
            refusals: watch::Sender::new(0),
            dir,
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://host:port`, the form `ONSALE_SMTP_URL` takes.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        self.shared
            .messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The count of received messages, to await changes of.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.received.subscribe()
    }

    /// How many times the sink has refused so far.
    pub fn refusals(&self) -> u64 {
        *self.shared.refusals.borrow()
    }

    /// Waits until at least `count` messages arrived; returns all of them.
    pub async fn wait_for(
        &self,
        count: u64,
        within: Duration,
    ) -> Result<Vec<Received>, WaitTimeout> {
        wait(&self.shared.received, "messages", count, within).await?;
        Ok(self.messages())
    }

    /// Waits until the sink has refused at least `count` times.
    pub async fn wait_for_refusals(&self, count: u64, within: Duration) -> Result<(), WaitTimeout> {
        wait(&self.shared.refusals, "refusals", count, within).await
    }
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait(
    counter: &watch::Sender<u64>,
    what: &'static str,
    wanted: u64,
    within: Duration,
) -> Result<(), WaitTimeout> {
    let mut rx = counter.subscribe();
    match tokio::time::timeout(within, rx.wait_for(|n| *n >= wanted)).await {
        Ok(Ok(_)) => Ok(()),
        _ => Err(WaitTimeout {
            what,
            wanted,
            got: *counter.borrow(),
            within,
        }),
    }
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refused(&self) {
        self.refusals.send_modify(|n| *n += 1);
    }

    fn store(&self, from: String, to: Vec<String>, data: String) -> u64 {
        let received_at = Utc::now();
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        let n = messages.len() as u64 + 1;
        let file = self.dir.as_ref().and_then(|dir| {
            let path = dir.join(format!(
                "{}-{n}.eml",
                received_at.format("%Y%m%dT%H%M%S%.3fZ")
            ));
            // A blocking write, briefly: this is a development tool and messages are small.
            match std::fs::write(&path, &data) {
                Ok(()) => Some(path),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot write the message");
                    None
                }
            }
        });
        messages.push(Received {
            from,
            to,
            data,
            received_at,
            file,
        });
        drop(messages);
        self.received.send_replace(n);
        n
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here, so aborting this task (dropping the sink) ends every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(smtp::serve(stream, shared.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "mail sink cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

/// `notifier catch-mail`: runs a sink on `listen` writing into `dir`, printing one
/// line per message, until `shutdown`.
pub async fn catch_mail(
    listen: SocketAddr,
    dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let sink = MailSink::bind_with_dir(listen, Some(dir.clone()))
        .await
        .with_context(|| format!("starting the mail sink on {listen} into {}", dir.display()))?;
    println!("catching mail on {} into {}", sink.url(), dir.display());
    let mut count = sink.subscribe();
    let mut printed = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            changed = count.changed() => changed.context("the mail sink stopped")?,
        }
        let messages = sink.messages();
        for message in messages.iter().skip(printed) {
            println!(
                "to={} subject={:?} file={}",
                message.to.join(","),
                message.subject().unwrap_or_default(),
                message
                    .file
                    .as_ref()
                    .map_or_else(|| "-".into(), |f| f.display().to_string()),
            );
        }
        printed = messages.len();
    }
}

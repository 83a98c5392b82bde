//! What the parent knows of its clients: their latest status and, at the end, their
//! summaries, taken from the reports their reader threads pass on.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use super::procs::ClientEvent;
use super::wire::{ClientReport, Status, Summary};

/// The clients' latest reports.
pub struct Board {
    statuses: Vec<Status>,
    summaries: Vec<Option<Summary>>,
}

impl Board {
    pub fn new(clients: usize) -> Self {
        Self {
            statuses: vec![Status::default(); clients],
            summaries: (0..clients).map(|_| None).collect(),
        }
    }

    /// The clients' statuses added up; `latest_move` is the move every client has
    /// heard of, and `have_latest` counts the sockets that have it where that is
    /// each client's latest.
    pub fn total(&self) -> Status {
        let mut total = Status::default();
        for status in &self.statuses {
            total.add(status);
        }
        total.latest_move = self
            .statuses
            .iter()
            .map(|s| s.latest_move)
            .min()
            .unwrap_or(0);
        total.have_latest = self
            .statuses
            .iter()
            .filter(|s| s.latest_move == total.latest_move)
            .map(|s| s.have_latest)
            .sum();
        total
    }

    fn take(&mut self, event: ClientEvent) -> anyhow::Result<()> {
        match event {
            ClientEvent::Report(i, ClientReport::Status(status)) => self.statuses[i] = status,
            ClientEvent::Report(i, ClientReport::Summary(summary)) => {
                self.statuses[i] = summary.status.clone();
                self.summaries[i] = Some(summary);
            }
            ClientEvent::Gone(i) => {
                if self.summaries[i].is_none() {
                    bail!("client {i} exited before reporting (its stderr is above)");
                }
            }
        }
        Ok(())
    }

    /// Takes reports until `deadline`.
    pub async fn pump_until(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<ClientEvent>,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<()> {
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => self.take(event)?,
                Ok(None) => bail!("every client has exited"),
                Err(_) => return Ok(()),
            }
        }
    }

    /// Takes reports until `done` says so, or until nothing has changed for `stall`.
    pub async fn follow(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<ClientEvent>,
        stall: Duration,
        mut done: impl FnMut(&Status) -> bool,
    ) -> anyhow::Result<()> {
        let mut last = Instant::now();
        let mut seen = progress_key(&self.total());
        loop {
            let total = self.total();
            if done(&total) {
                return Ok(());
            }
            let key = progress_key(&total);
            if key != seen {
                (seen, last) = (key, Instant::now());
            } else if last.elapsed() > stall {
                eprintln!("no progress for {} s; going on", stall.as_secs());
                return Ok(());
            }
            let slice = tokio::time::Instant::now() + Duration::from_millis(250);
            self.pump_until(events, slice).await?;
        }
    }

    /// Every client's summary, waiting up to `limit`.
    pub async fn summaries(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<ClientEvent>,
        limit: Duration,
    ) -> anyhow::Result<Vec<Summary>> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.summaries.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => self.take(event)?,
                Ok(None) => break,
                Err(_) => bail!("the clients did not report within {} s", limit.as_secs()),
            }
        }
        self.summaries
            .iter_mut()
            .enumerate()
            .map(|(i, s)| {
                s.take()
                    .with_context(|| format!("client {i} did not report"))
            })
            .collect()
    }
}

/// What counts as progress while waiting.
fn progress_key(total: &Status) -> (usize, usize, usize, usize, u32) {
    (
        total.attempted,
        total.ready,
        total.dropped,
        total.have_latest,
        total.latest_move,
    )
}

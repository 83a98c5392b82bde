//! One way to run a service: its operations endpoint ([`OpsServer`]), its loops, a
//! defined shutdown order, and an exit when a loop dies.
//!
//! ```text
//! shutdown signal ──► hooks run (a realtime node sends its sockets a Close frame)
//!                 ──► the stop token is cancelled: every loop stops taking work and
//!                     finishes what it holds (a relay batch, an email, a ledger write)
//!                 ──► once every loop has returned, the operations endpoint closes
//!                 ──► the spans still buffered are exported (`telemetry::flush`)
//! ```
//!
//! The endpoint answers until the loops are done: a process that is finishing its
//! work is alive (and says whether it is ready), not dead. A loop that returns before
//! shutdown, with or without an error, ends the process with an error after the
//! others have stopped: a supervisor restarts it, instead of keeping a process that
//! reports healthy and does nothing.

use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::runtime::OpsServer;

type Loop = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A service ready to run: see the module docs.
pub struct Runner {
    ops: OpsServer,
    stop: CancellationToken,
    loops: Vec<(&'static str, Loop)>,
    hooks: Vec<Box<dyn FnOnce() + Send>>,
}

impl Runner {
    pub fn new(ops: OpsServer) -> Self {
        Self {
            ops,
            stop: CancellationToken::new(),
            loops: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// A loop of the service, made from the token that tells it to stop. It must
    /// return once the token is cancelled and its work in hand is done.
    pub fn with_loop<F>(
        mut self,
        name: &'static str,
        make: impl FnOnce(CancellationToken) -> F,
    ) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let work = make(self.stop.clone());
        self.loops.push((name, Box::pin(work)));
        self
    }

    /// Work done first when shutdown begins, before the loops are told to stop.
    pub fn on_shutdown(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Runs until `shutdown` resolves (then stops in the module's order), or until a
    /// loop or the endpoint ends on its own (an error).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Runner {
            ops,
            stop,
            loops,
            hooks,
        } = self;
        let mut tasks = tokio::task::JoinSet::new();
        for (name, work) in loops {
            tasks.spawn(async move { (name, work.await) });
        }
        let ops_done = CancellationToken::new();
        let mut ops = tokio::spawn(ops.run(ops_done.clone().cancelled_owned()));

        let mut failure: Option<anyhow::Error> = None;
        tokio::select! {
            () = shutdown => {}
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let error = match joined {
                    Ok((name, Ok(()))) => anyhow::anyhow!("the {name} loop ended before shutdown"),
                    Ok((name, Err(error))) => error.context(format!("the {name} loop failed")),
                    Err(panicked) => anyhow::anyhow!("a loop panicked: {panicked}"),
                };
                tracing::error!(error = format!("{error:#}"), "a loop ended; the service stops");
                failure = Some(error);
            }
            served = &mut ops => {
                // The endpoint ended on its own: nothing can tell whether this
                // process works any more.
                stop.cancel();
                while tasks.join_next().await.is_some() {}
                served.context("operations task")??;
                anyhow::bail!("the operations endpoint ended before shutdown");
            }
        }
        for hook in hooks {
            hook();
        }
        stop.cancel();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(error))) => {
                    tracing::error!(
                        loop_name = name,
                        error = format!("{error:#}"),
                        "a loop failed while stopping"
                    );
                    failure.get_or_insert(error.context(format!("the {name} loop failed")));
                }
                Err(panicked) => {
                    failure.get_or_insert(anyhow::anyhow!("a loop panicked: {panicked}"));
                }
            }
        }
        ops_done.cancel();
        let served = ops.await.context("operations task");
        // Blocking (the exporter's own thread sends the batch), and the last step.
        tokio::task::spawn_blocking(crate::telemetry::flush)
            .await
            .ok();
        let served = served?;
        match failure {
            Some(error) => Err(error),
            None => served,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ops() -> OpsServer {
        OpsServer::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), "test")
            .await
            .expect("bind")
    }

    #[tokio::test]
    async fn a_loop_that_dies_ends_the_service_with_its_error() {
        let runner = ops().await;
        let outcome = Runner::new(runner)
            .with_loop("steady", |stop| async move {
                stop.cancelled().await;
                Ok(())
            })
            .with_loop("fragile", |_| async { anyhow::bail!("lost the broker") })
            .run(std::future::pending())
            .await;
        let error = format!("{:#}", outcome.expect_err("the service ends with an error"));
        assert!(
            error.contains("fragile") && error.contains("lost the broker"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_loop_that_returns_early_is_an_error_too() {
        let outcome = Runner::new(ops().await)
            .with_loop("quitter", |_| async { Ok(()) })
            .run(std::future::pending())
            .await;
        let error = format!("{:#}", outcome.expect_err("an early return is an error"));
        assert!(
            error.contains("quitter loop ended before shutdown"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn at_shutdown_hooks_run_then_loops_finish_then_the_endpoint_closes() {
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<&str>::new()));
        let (hook_order, loop_order) = (order.clone(), order.clone());
        let ops = ops().await;
        let port = ops.port();
        let (tell, told) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(
            Runner::new(ops)
                .on_shutdown(move || hook_order.lock().unwrap().push("hook"))
                .with_loop("worker", move |stop| async move {
                    stop.cancelled().await;
                    // The endpoint still answers while the loop finishes its work.
                    let alive = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok();
                    loop_order.lock().unwrap().push(if alive {
                        "loop done, endpoint up"
                    } else {
                        "loop done, endpoint gone"
                    });
                    Ok(())
                })
                .run(async move {
                    let _ = told.await;
                }),
        );
        tell.send(()).expect("shutdown sent");
        running.await.expect("task").expect("a clean shutdown");
        assert_eq!(*order.lock().unwrap(), ["hook", "loop done, endpoint up"]);
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "the endpoint closed at the end"
        );
    }
}

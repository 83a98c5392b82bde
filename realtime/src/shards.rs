//! The node's one sharded pub/sub connection, shared by every feed.
//!
//! An event's live messages are `SPUBLISH`ed on its channel, which carries the
//! event's hash tag: on a Redis Cluster they stay on the node that owns the event's
//! keys, and [`platform::store::ShardedPubSub`] subscribes there (following the slot
//! if it moves or fails over). However many events a node follows, it holds one
//! subscription connection (per shard on a cluster), not one per event: a flood of
//! sockets for many events costs Redis no connections.
//!
//! One task owns the connection. Feeds [`Subscriber::join`] a channel and get a
//! [`Subscription`]: a bounded queue of the channel's messages and a counter that
//! goes up whenever messages may have been lost (the connection dropped, or the
//! feed fell so far behind that its queue was full). A feed that sees the counter
//! move re-reads what it shows from Redis, as it does after any gap. The channel is
//! unsubscribed when its last subscription is dropped.

use std::collections::HashMap;
use std::time::Duration;

use platform::store::{ShardedPubSub, Store};
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Messages one feed may have waiting before the next ones are dropped (and the
/// feed told so): a feed reads them as they come, so this is only ever reached
/// by a node that is itself overloaded.
const QUEUE: usize = 1024;

/// Handle on the node's subscription task. Cheap to clone.
#[derive(Clone)]
pub struct Subscriber {
    commands: mpsc::UnboundedSender<Command>,
}

/// One feed's view of its channel.
pub struct Subscription {
    /// The channel's messages, in the order Redis sent them.
    pub messages: mpsc::Receiver<String>,
    /// Goes up when messages may have been missed.
    pub lost: watch::Receiver<u64>,
    channel: String,
    id: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave {
            channel: std::mem::take(&mut self.channel),
            id: self.id,
        });
    }
}

enum Command {
    Join {
        channel: String,
        route: Route,
        reply: oneshot::Sender<RedisResult<()>>,
    },
    Leave {
        channel: String,
        id: u64,
    },
}

struct Route {
    id: u64,
    messages: mpsc::Sender<String>,
    lost: watch::Sender<u64>,
}

impl Route {
    fn lose(&self) {
        self.lost.send_modify(|n| *n += 1);
    }
}

impl Subscriber {
    /// Starts the task; it connects on the first join, and ends at `shutdown` or
    /// once neither this handle nor any subscription is left.
    pub fn start(store: Store, shutdown: CancellationToken) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(store, receiver, shutdown));
        Self { commands }
    }

    /// Follows `channel`: subscribed on Redis (if this node did not follow it yet)
    /// before this returns.
    pub async fn join(&self, channel: &str) -> RedisResult<Subscription> {
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (sender, messages) = mpsc::channel(QUEUE);
        let (lost_sender, lost) = watch::channel(0);
        let (reply, answer) = oneshot::channel();
        let gone = || {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "the node's subscription task has stopped",
            ))
        };
        self.commands
            .send(Command::Join {
                channel: channel.to_owned(),
                route: Route {
                    id,
                    messages: sender,
                    lost: lost_sender,
                },
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())??;
        Ok(Subscription {
            messages,
            lost,
            channel: channel.to_owned(),
            id,
            commands: self.commands.clone(),
        })
    }
}

struct State {
    store: Store,
    pushes: mpsc::UnboundedSender<PushInfo>,
    connection: Option<ShardedPubSub>,
    routes: HashMap<String, Vec<Route>>,
}

impl State {
    /// The connection, opened (and every followed channel subscribed again) if
    /// there is none.
    async fn connection(&mut self) -> RedisResult<&mut ShardedPubSub> {
        if self.connection.is_none() {
            let mut connection = self.store.sharded_pubsub(self.pushes.clone()).await?;
            for channel in self.routes.keys() {
                connection.subscribe(channel).await?;
            }
            if !self.routes.is_empty() {
                tracing::info!(
                    channels = self.routes.len(),
                    "live channels subscribed again"
                );
                // What was published while unsubscribed is lost: the feeds re-read.
                for route in self.routes.values().flatten() {
                    route.lose();
                }
            }
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected above"))
    }

    async fn join(&mut self, channel: String, route: Route) -> RedisResult<()> {
        if !self.routes.contains_key(&channel) {
            let subscribed = match self.connection().await {
                Ok(connection) => connection.subscribe(&channel).await,
                Err(error) => Err(error),
            };
            if let Err(error) = subscribed {
                // Whatever went wrong, the next join starts from a fresh connection.
                self.connection = None;
                return Err(error);
            }
            metrics::gauge!("onsale_realtime_channels").increment(1);
        }
        self.routes.entry(channel).or_default().push(route);
        Ok(())
    }

    async fn leave(&mut self, channel: String, id: u64) {
        let Some(routes) = self.routes.get_mut(&channel) else {
            return;
        };
        routes.retain(|route| route.id != id);
        if !routes.is_empty() {
            return;
        }
        self.routes.remove(&channel);
        metrics::gauge!("onsale_realtime_channels").decrement(1);
        if let Some(connection) = self.connection.as_mut()
            && let Err(error) = connection.unsubscribe(&channel).await
        {
            // Messages for a channel nobody follows are dropped below; the next
            // connection will not subscribe it.
            tracing::debug!(%channel, %error, "unsubscribing failed");
        }
    }

    fn deliver(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let (Some(channel), Some(payload)) = (text(push.data.first()), push.data.get(1))
                else {
                    return;
                };
                let Some(routes) = self.routes.get(&channel) else {
                    return;
                };
                let Some(payload) = text(Some(payload)) else {
                    return;
                };
                for route in routes {
                    if route.messages.try_send(payload.clone()).is_err() {
                        metrics::counter!("onsale_realtime_messages_dropped_total").increment(1);
                        route.lose();
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!(
                    channels = self.routes.len(),
                    "the live subscription connection dropped; subscribing again"
                );
                metrics::counter!("onsale_realtime_subscription_losses_total").increment(1);
                for route in self.routes.values().flatten() {
                    route.lose();
                }
                // A cluster connection subscribes again by itself; one server's
                // connection is gone for good.
                if matches!(self.connection, Some(ShardedPubSub::Single(_))) {
                    self.connection = None;
                }
            }
            _ => {}
        }
    }
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

async fn run(
    store: Store,
    mut commands: mpsc::UnboundedReceiver<Command>,
    shutdown: CancellationToken,
) {
    let (pushes, mut received) = mpsc::unbounded_channel();
    let mut state = State {
        store,
        pushes,
        connection: None,
        routes: HashMap::new(),
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        // Followed channels with no connection (it dropped): connect again.
        let reconnect = state.connection.is_none() && !state.routes.is_empty();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            command = commands.recv() => match command {
                Some(Command::Join { channel, route, reply }) => {
                    let _ = reply.send(state.join(channel, route).await);
                }
                Some(Command::Leave { channel, id }) => state.leave(channel, id).await,
                None => break,
            },
            Some(push) = received.recv() => state.deliver(push),
            _ = tokio::time::sleep(backoff), if reconnect => {
                match state.connection().await {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(error) => {
                        state.connection = None;
                        tracing::warn!(%error, "live subscription: cannot connect; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
    }
    metrics::gauge!("onsale_realtime_channels").decrement(state.routes.len() as f64);
}

//! Where onsale's Redis is, and the one connection type every service uses for it:
//! a single server or a Redis Cluster, chosen by the URL alone.
//!
//! - `redis://host:port/` (or `rediss://`, `unix://`): one server, through a
//!   reconnecting [`ConnectionManager`].
//! - `redis+cluster://host:port,host:port,...`: the seed nodes of a Redis Cluster,
//!   through redis-rs's cluster client, which follows `MOVED` and `ASK`, refreshes
//!   its slot map and reconnects to nodes by itself. A user and password in the URL
//!   apply to every node.
//!
//! Every key one script or one command touches carries the event's hash tag
//! ([`proto::Keys`]), so it sits in one slot. What is not one slot is the
//! plain pipeline that writes an event's keys and a few global ones in one round
//! trip (a join writes the request index beside the join script): on a cluster,
//! [`Redis`] splits such a pipeline by slot, sends the parts concurrently, and
//! hands back the replies in the pipeline's order. A pipeline is not atomic on a
//! single server either, so the split changes nothing a caller can rely on.
//! Transactions (`MULTI`/`EXEC`) are never split: one that spans slots fails, as it
//! must.
//!
//! Pub/sub, two kinds:
//! - global (`PUBLISH`): on a cluster it reaches subscribers on every node, so
//!   [`Store::pubsub`] subscribes through the first seed node that answers. For the
//!   few messages every process needs (sessions ended).
//! - sharded (`SPUBLISH`, Redis 7): a message stays on the node owning its channel's
//!   slot, so an event's live messages (its channel carries the event's hash tag)
//!   cost the other shards nothing. [`Store::sharded_pubsub`] follows any number of
//!   channels on one connection.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// The URL scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How long a command on a shared cluster connection may wait for its node, per
/// attempt (a single server's `ConnectionManager` has its own 500 ms default).
const CLUSTER_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A parsed Redis address: a client for one server, or for a cluster.
#[allow(
    clippy::large_enum_variant,
    reason = "a process holds one or two, never a collection"
)]
#[derive(Clone)]
pub enum Store {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        /// For blocking reads: the same seeds, no response timeout.
        blocking: ClusterClient,
        /// One plain client per seed node, for pub/sub.
        seeds: Vec<redis::Client>,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Single(_) => f.write_str("Store::Single"),
            Store::Cluster { seeds, .. } => write!(f, "Store::Cluster({} seeds)", seeds.len()),
        }
    }
}

impl Store {
    /// Parses `url` (see the module documentation). Nothing is connected yet.
    pub fn open(url: &str) -> RedisResult<Self> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Store::Single(redis::Client::open(url)?));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("redis://{auth}{host}/"))
            .collect();
        if seeds.is_empty() {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a redis+cluster:// URL names no node",
            )));
        }
        let client = ClusterClient::builder(seeds.clone())
            .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
            .build()?;
        let blocking = ClusterClient::builder(seeds.clone()).build()?;
        let seeds = seeds
            .iter()
            .map(|seed| redis::Client::open(seed.as_str()))
            .collect::<RedisResult<_>>()?;
        Ok(Store::Cluster {
            client,
            blocking,
            seeds,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Store::Cluster { .. })
    }

    /// The shared, reconnecting connection for everything that does not block.
    pub async fn shared(&self) -> RedisResult<Redis> {
        Ok(match self {
            Store::Single(client) => Redis::Single(client.get_connection_manager().await?),
            Store::Cluster { client, .. } => Redis::Cluster(client.get_async_connection().await?),
        })
    }

    /// A connection of its own for blocking reads (`XREADGROUP ... BLOCK`), with no
    /// response timeout: a blocked read would stall every other command on a shared
    /// connection, and the default timeout would cut it short.
    pub async fn blocking(&self) -> RedisResult<Redis> {
        Ok(match self {
            Store::Single(client) => Redis::Multiplexed(
                client
                    .get_multiplexed_async_connection_with_config(
                        &redis::AsyncConnectionConfig::new().set_response_timeout(None),
                    )
                    .await?,
            ),
            Store::Cluster { blocking, .. } => {
                Redis::Cluster(blocking.get_async_connection().await?)
            }
        })
    }

    /// A pub/sub connection: to the server, or to the first seed of the cluster that
    /// answers (a message published on any node reaches every node's subscribers).
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        match self {
            Store::Single(client) => client.get_async_pubsub().await,
            Store::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    match seed.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(error) => last = Some(error),
                    }
                }
                Err(last.expect("a cluster store has at least one seed"))
            }
        }
    }

    /// One connection for sharded pub/sub (`SSUBSCRIBE`, Redis 7), shared by every
    /// channel a process follows: on one server, a RESP3 connection of its own; on a
    /// cluster, a RESP3 cluster connection that subscribes each channel on the node
    /// owning its slot (and follows it there when the slot moves or fails over).
    /// Messages and disconnections arrive on `pushes`.
    pub async fn sharded_pubsub(
        &self,
        pushes: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> RedisResult<ShardedPubSub> {
        match self {
            Store::Single(client) => {
                let info = client.get_connection_info().clone();
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_protocol(redis::ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings))?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_push_sender(pushes)
                    .set_response_timeout(Some(CLUSTER_RESPONSE_TIMEOUT));
                Ok(ShardedPubSub::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
            Store::Cluster { seeds, .. } => {
                let client = ClusterClient::builder(
                    seeds.iter().map(|seed| seed.get_connection_info().clone()),
                )
                .use_protocol(redis::ProtocolVersion::RESP3)
                .response_timeout(CLUSTER_RESPONSE_TIMEOUT)
                .push_sender(pushes)
                .build()?;
                Ok(ShardedPubSub::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

/// A sharded pub/sub connection ([`Store::sharded_pubsub`]). A cluster connection
/// subscribes again by itself after it reconnects; a single server's does not (a
/// `Disconnection` push says it is gone: open a new one).
#[derive(Clone)]
pub enum ShardedPubSub {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ShardedPubSub {
    /// `SSUBSCRIBE channel`: messages `SPUBLISH`ed on it arrive as `SMessage` pushes.
    pub async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            // One channel, one confirmation: RESP3 hands it back as the reply.
            ShardedPubSub::Single(connection) => {
                redis::cmd("SSUBSCRIBE")
                    .arg(channel)
                    .exec_async(connection)
                    .await
            }
            ShardedPubSub::Cluster(connection) => connection.ssubscribe(channel).await,
        }
    }

    /// `SUNSUBSCRIBE channel`.
    pub async fn unsubscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            ShardedPubSub::Single(connection) => {
                redis::cmd("SUNSUBSCRIBE")
                    .arg(channel)
                    .exec_async(connection)
                    .await
            }
            ShardedPubSub::Cluster(connection) => connection.sunsubscribe(channel).await,
        }
    }
}

/// A connection to onsale's Redis, one server or a cluster. Cheap to clone; every
/// clone shares the underlying connections.
#[derive(Clone)]
pub enum Redis {
    Single(ConnectionManager),
    /// A connection of its own, for blocking reads on one server.
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Redis {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Redis::Cluster(_))
    }

    /// Connects to `url` (see [`Store::open`]).
    pub async fn connect(url: &str) -> RedisResult<Self> {
        Store::open(url)?.shared().await
    }

    /// One `SCAN` step over the keys of the slot `near` lives in: on a cluster, on the
    /// node that owns that slot (every key of one event is there); on one server, over
    /// the whole keyspace.
    pub async fn scan_near(
        &mut self,
        near: &str,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        match self {
            Redis::Cluster(connection) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(near, SlotAddr::Master),
                ));
                let reply = connection.route_command(scan, routing).await?;
                Ok(redis::from_redis_value(reply)?)
            }
            _ => scan.query_async(self).await,
        }
    }

    /// `WAIT replicas timeout` on the master of `near`'s slot: how many replicas
    /// hold every write this connection sent so far. Send it on a connection of its
    /// own ([`Store::blocking`]): the server holds the connection's next commands
    /// until it answers.
    pub async fn wait_for_replicas(
        &mut self,
        near: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<u32> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        match self {
            Redis::Cluster(connection) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(near, SlotAddr::Master),
                ));
                let reply = connection.route_command(wait, routing).await?;
                Ok(redis::from_redis_value(reply)?)
            }
            _ => wait.query_async(self).await,
        }
    }

    /// Every key matching `pattern`, on every master. For tests, audits and
    /// operators' tools, never a request's path: it walks the whole keyspace.
    pub async fn scan_everywhere(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut found = Vec::new();
        for node in self.masters().await? {
            let mut cursor = 0u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1_000);
                let (next, keys): (u64, Vec<String>) = self.on_node(&node, scan).await?;
                found.extend(keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Some node answers `PING`: on a cluster, any live master (one master down
    /// leaves the events on the others served, so readiness must not hang on it).
    pub async fn ping(&mut self) -> RedisResult<()> {
        if !self.is_cluster() {
            return redis::cmd("PING").query_async::<()>(self).await;
        }
        let mut last = None;
        for node in self.masters().await? {
            match self.on_node::<()>(&node, redis::cmd("PING")).await {
                Ok(()) => return Ok(()),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| {
            RedisError::from((redis::ErrorKind::Client, "the cluster names no master"))
        }))
    }

    /// `cmd`'s reply from every master (a single server: from it), in node order:
    /// `INFO` of the whole cluster, for instance.
    pub async fn on_each_master<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
    ) -> RedisResult<Vec<T>> {
        let mut replies = Vec::new();
        for node in self.masters().await? {
            replies.push(self.on_node(&node, cmd.clone()).await?);
        }
        Ok(replies)
    }

    async fn on_node<T: redis::FromRedisValue>(
        &mut self,
        node: &Option<(String, u16)>,
        cmd: Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Redis::Cluster(connection), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                Ok(redis::from_redis_value(
                    connection.route_command(cmd, routing).await?,
                )?)
            }
            (connection, _) => cmd.query_async(connection).await,
        }
    }

    /// The address of every master of a cluster, from `CLUSTER NODES`; one `None`
    /// for a single server.
    async fn masters(&mut self) -> RedisResult<Vec<Option<(String, u16)>>> {
        let Redis::Cluster(_) = self else {
            return Ok(vec![None]);
        };
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(self).await?;
        Ok(cluster_masters(&nodes)
            .into_iter()
            .map(|(host, port)| Some((host, port)))
            .collect())
    }
}

/// The `host:port` of every live master in a `CLUSTER NODES` reply.
pub fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|flag| flag == "master")
                || flags
                    .split(',')
                    .any(|flag| flag == "fail" || flag == "noaddr")
            {
                return None;
            }
            let address = fields.get(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Single(connection) => connection.req_packed_command(cmd),
            Redis::Multiplexed(connection) => connection.req_packed_command(cmd),
            Redis::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Redis::Multiplexed(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Redis::Cluster(connection) => {
                Box::pin(split_by_slot(connection, pipeline, offset, count))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Single(connection) => connection.get_db(),
            Redis::Multiplexed(connection) => connection.get_db(),
            Redis::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Sends a plain pipeline whose commands live in several slots as one pipeline per
/// slot, concurrently, and puts the replies back in the pipeline's order. Commands
/// without a key (`SCRIPT LOAD`, `PING`) go with every part; their reply is the
/// first part's. A single-slot pipeline and a transaction go as they are.
async fn split_by_slot(
    connection: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let slots: Vec<Option<Slot>> = commands
        .iter()
        .map(|cmd| first_key(cmd).map(Slot::for_key))
        .collect();
    let mut order: Vec<Slot> = Vec::new();
    for slot in slots.iter().flatten() {
        if !order.contains(slot) {
            order.push(*slot);
        }
    }
    let transaction = offset != 0 || count != commands.len();
    if transaction || order.len() <= 1 {
        return connection
            .req_packed_commands(pipeline, offset, count)
            .await;
    }
    let part_of: HashMap<Slot, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    // For each part, the original index of each of its commands, in order.
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    for (index, slot) in slots.iter().enumerate() {
        match slot {
            Some(slot) => members[part_of[slot]].push(index),
            None => members.iter_mut().for_each(|part| part.push(index)),
        }
    }
    let parts = members.iter().map(|indices| {
        let mut part = redis::pipe();
        for &index in indices {
            part.add_command(commands[index].clone());
        }
        let mut connection = connection.clone();
        async move {
            let length = indices.len();
            connection.req_packed_commands(&part, 0, length).await
        }
    });
    let replies = futures_util::future::try_join_all(parts).await?;
    let mut out: Vec<Option<Value>> = vec![None; commands.len()];
    for (indices, values) in members.iter().zip(replies) {
        for (&index, value) in indices.iter().zip(values) {
            if out[index].is_none() {
                out[index] = Some(value);
            }
        }
    }
    out.into_iter()
        .map(|value| {
            value.ok_or_else(|| {
                RedisError::from((redis::ErrorKind::Client, "a split pipeline came back short"))
            })
        })
        .collect()
}

/// The first key a command names, by Redis's own conventions for the commands
/// onsale pipelines: scripts name theirs after `numkeys`, stream reads after
/// `STREAMS`, server commands none, everything else as its first argument.
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let _script = args.next()?;
            let numkeys: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if numkeys == 0 { None } else { args.next() }
        }
        b"XREAD" | b"XREADGROUP" => {
            args.find(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))?;
            args.next()
        }
        b"SCRIPT" | b"FUNCTION" | b"PING" | b"ECHO" | b"INFO" | b"CLUSTER" | b"CONFIG"
        | b"TIME" | b"DBSIZE" | b"PUBLISH" | b"SCAN" | b"CLIENT" | b"MULTI" | b"EXEC" => None,
        _ => args.next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_seed_with_the_shared_credentials() {
        let store =
            Store::open("redis+cluster://user:secret@10.0.0.1:7001,10.0.0.2:7002/").unwrap();
        let Store::Cluster { seeds, .. } = store else {
            panic!("a cluster URL opened as one server");
        };
        let addresses: Vec<String> = seeds
            .iter()
            .map(|seed| seed.get_connection_info().addr().to_string())
            .collect();
        assert_eq!(addresses, ["10.0.0.1:7001", "10.0.0.2:7002"]);
        assert!(Store::open("redis+cluster://").is_err());
        assert!(!Store::open("redis://127.0.0.1:6379").unwrap().is_cluster());
    }

    #[test]
    fn keys_are_found_where_each_command_names_them() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("abc")
            .arg(2)
            .arg("{ev:1}:sale")
            .arg("{ev:1}:fans")
            .arg("x");
        assert_eq!(first_key(&eval), Some(&b"{ev:1}:sale"[..]));
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("STREAMS")
            .arg("{ev:2}:q")
            .arg(">");
        assert_eq!(first_key(&read), Some(&b"{ev:2}:q"[..]));
        assert_eq!(
            first_key(redis::cmd("SCRIPT").arg("LOAD").arg("return 1")),
            None
        );
        assert_eq!(
            first_key(redis::cmd("SET").arg("k").arg("v")),
            Some(&b"k"[..])
        );
    }

    #[test]
    fn only_live_masters_are_scanned() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave b2 0 0 2 connected
d4 127.0.0.1:7004@17004 master,fail - 0 0 3 connected
";
        assert_eq!(
            cluster_masters(nodes),
            [
                ("127.0.0.1".to_string(), 7001),
                ("127.0.0.1".to_string(), 7002)
            ]
        );
    }
}

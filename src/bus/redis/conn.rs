//! Where Redis is and how to talk to it: endpoints, bus modes, and the connections the bus and the emitter use.

use std::time::Duration;

use redis::aio::{AsyncPushSender, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::TcpSettings;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, ProtocolVersion, RedisResult};

/// How long connecting to Redis may take before the attempt counts as failed.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may take before the connection counts as broken.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis runs. `Debug` hides the URLs' passwords (see [`crate::redact::url`]).
#[derive(Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One Redis server (or a proxy in front of one), e.g. `redis://127.0.0.1:6379`.
    Single(String),
    /// A Redis Cluster, given by one or more of its nodes (the rest is discovered).
    Cluster(Vec<String>),
}

impl RedisEndpoint {
    /// One Redis server.
    pub fn single(url: impl Into<String>) -> Self {
        Self::Single(url.into())
    }

    /// A Redis Cluster from seed node URLs.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        Self::Cluster(nodes.into_iter().map(Into::into).collect())
    }

    /// The mode that fits this endpoint when none is configured: classic for one server, sharded for a cluster.
    pub fn default_mode(&self) -> BusMode {
        match self {
            Self::Single(_) => BusMode::Classic,
            Self::Cluster(_) => BusMode::Sharded,
        }
    }
}

impl std::fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(url) => f.debug_tuple("Single").field(&crate::redact::url(url)).finish(),
            Self::Cluster(nodes) => f
                .debug_tuple("Cluster")
                .field(&nodes.iter().map(|n| crate::redact::url(n)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Which Redis pub/sub flavour carries envelopes. Emitters and servers of one fleet must use the same mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BusMode {
    /// `PUBLISH` / `SUBSCRIBE`: what the reference framework and its emitter use. On a cluster every message is
    /// relayed to every node.
    Classic,
    /// `SPUBLISH` / `SSUBSCRIBE` (Redis ≥ 7): a channel lives on the shard owning its slot, so cluster traffic
    /// scales with shards. Not understood by reference emitters.
    Sharded,
}

impl BusMode {
    /// The publishing command.
    pub(crate) fn publish_command(self) -> &'static str {
        match self {
            Self::Classic => "PUBLISH",
            Self::Sharded => "SPUBLISH",
        }
    }
}

impl std::str::FromStr for BusMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "classic" => Ok(Self::Classic),
            "sharded" => Ok(Self::Sharded),
            _ => Err(format!("unknown bus mode {s:?}: use classic or sharded")),
        }
    }
}

impl std::fmt::Display for BusMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Classic => "classic",
            Self::Sharded => "sharded",
        })
    }
}

/// One logical connection to the endpoint (multiplexed: clones share it).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects; with `push` the connection speaks RESP3 and hands pub/sub pushes to it.
    pub(crate) async fn open(endpoint: &RedisEndpoint, push: Option<impl AsyncPushSender>) -> RedisResult<Self> {
        let attempt = async {
            match endpoint {
                RedisEndpoint::Single(url) => {
                    let mut info = url.as_str().into_connection_info()?;
                    info = info.set_tcp_settings(tcp_settings());
                    let mut config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(RESPONSE_TIMEOUT));
                    if let Some(push) = push {
                        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                        info = info.set_redis_settings(settings);
                        config = config.set_push_sender(push);
                    }
                    let client = redis::Client::open(info)?;
                    let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
                    Ok(Self::Single(conn))
                }
                RedisEndpoint::Cluster(nodes) => {
                    let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .tcp_settings(tcp_settings())
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(RESPONSE_TIMEOUT)
                        .retries(3)
                        .min_retry_wait(50)
                        .max_retry_wait(500);
                    if let Some(push) = push {
                        builder = builder.use_protocol(ProtocolVersion::RESP3).push_sender(push);
                    }
                    let conn = builder.build()?.get_async_connection().await?;
                    Ok(Self::Cluster(conn))
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 3, attempt).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error()),
        }
    }

    /// Runs one command with the response timeout applied on top of the client's own.
    pub(crate) async fn run<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> RedisResult<T> {
        let fut = async {
            match self {
                Self::Single(c) => cmd.query_async(c).await,
                Self::Cluster(c) => cmd.query_async(c).await,
            }
        };
        match tokio::time::timeout(RESPONSE_TIMEOUT * 2, fut).await {
            Ok(r) => r,
            Err(_) => Err(timeout_error()),
        }
    }

    /// Publishes `payloads` in order on their channels; returns per message how many subscribers got it.
    pub(crate) async fn publish_batch(&mut self, mode: BusMode, batch: &[(String, String)]) -> RedisResult<Vec<i64>> {
        let cmds: Vec<redis::Cmd> = batch
            .iter()
            .map(|(channel, payload)| publish_cmd(mode, channel, payload))
            .collect();
        self.run_in_order(&cmds).await
    }

    /// Runs `cmds` in order: one pipeline (one round trip) on one server; on a cluster one command each (their
    /// keys or channels live on different shards).
    pub(crate) async fn run_in_order<T: redis::FromRedisValue>(&mut self, cmds: &[redis::Cmd]) -> RedisResult<Vec<T>> {
        match self {
            Self::Single(c) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                match tokio::time::timeout(RESPONSE_TIMEOUT * 2, pipe.query_async(c)).await {
                    Ok(r) => r,
                    Err(_) => Err(timeout_error()),
                }
            }
            Self::Cluster(_) => {
                let mut out = Vec::with_capacity(cmds.len());
                for cmd in cmds {
                    out.push(self.run(cmd).await?);
                }
                Ok(out)
            }
        }
    }
}

/// No Nagle delay: envelopes are small and latency-bound (measured at 1,000 msg/s: p99 0.5 ms with, 4.4 ms without).
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

pub(crate) fn publish_cmd(mode: BusMode, channel: &str, payload: &str) -> redis::Cmd {
    let mut cmd = redis::cmd(mode.publish_command());
    cmd.arg(channel).arg(payload);
    cmd
}

fn timeout_error() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis operation timed out",
    ))
}

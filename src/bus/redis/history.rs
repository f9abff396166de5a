//! Room history on Redis: one Redis Stream per room, its offset counter and epoch in a hash beside it, and the
//! idempotency keys, all under the hash tag of the room's channel so that in a Redis Cluster they live on the
//! shard of the room's sharded channel.
//!
//! An append is one Lua script: it creates the epoch if the stream has none (a new room, or Redis lost it: a new
//! random epoch, supplied by the caller because scripts cannot draw random numbers), checks the idempotency key,
//! takes the next offset (`HINCRBY`), `XADD`s the message with the explicit id `0-<offset>` (`MAXLEN` =
//! `history_size`), and publishes the envelope with its `offset` and `epoch` on the room's channel — atomically,
//! so offsets are dense and the publish order is the offset order. Appends go through the bus's publisher queue
//! in order with the plain envelopes. A read is one script too (the position and the entries after an offset, or
//! the latest ones), which creates the epoch as well: after a Redis restart without persistence the first read
//! or append starts a new epoch, and recoveries from the old one answer `recovered: false`.
//!
//! Keys: `{T}:sealcast:s:<channel>` (stream), `{T}:sealcast:m:<channel>` (hash: `epoch`, `offset`),
//! `{T}:sealcast:i:<len>:<who><id>:<channel>` (idempotency key), where `{T}` is the channel's hash tag: the
//! channel itself, or the tag the channel already carries. In a cluster, a room whose name has braces but no
//! usable hash tag cannot have its keys on its channel's slot: it keeps no history ([`RedisHistory::keys`]).
//! Expiry: the stream and the idempotency keys live `history_ttl` after the last write, the hash at least a day
//! (so that a quiet room keeps its epoch), entries older than `history_ttl` are not replayed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::Value;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::replay::Replays;
use super::{BusMode, Codec, Conn, Inner, Outgoing, MAX_ENVELOPE_LEN};
use crate::history::IdKey;
use crate::protocol::{Envelope, StreamPosition};

/// How long a room's offset counter and epoch outlive its last message, at least.
const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// Both scripts start here: the stream's epoch, created (with offset 0, and no stale entries) from the caller's
/// random candidate `ARGV[1]` when the hash is missing — a new room, or Redis lost it.
macro_rules! epoch_prelude {
    () => {
        r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
local created = false
if not epoch then
  epoch = ARGV[1]
  created = true
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
  redis.call('DEL', KEYS[1])
end
"#
    };
}

const APPEND: &str = concat!(
    epoch_prelude!(),
    r#"
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sp = string.find(seen, ' ')
    return {tonumber(string.sub(seen, 1, sp - 1)), string.sub(seen, sp + 1), 1}
  end
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '0-' .. offset, 'e', ARGV[6], 'd', ARGV[7], 't', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if KEYS[3] then
  redis.call('SET', KEYS[3], offset .. ' ' .. epoch, 'PX', ARGV[3])
end
local receivers = redis.call(ARGV[8], ARGV[9], ARGV[10] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}')
return {offset, epoch, 0, receivers}
"#
);

const CLAIM: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call(ARGV[2], ARGV[3], ARGV[4])
  return 0
end
return 1
"#;

const READ: &str = concat!(
    epoch_prelude!(),
    r#"
if created then
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
local last = tonumber(redis.call('HGET', KEYS[2], 'offset'))
local entries = {}
if ARGV[2] == 'after' then
  entries = redis.call('XRANGE', KEYS[1], '0-' .. ARGV[3], '+', 'COUNT', ARGV[4])
elseif ARGV[2] == 'recent' then
  local start = math.max(tonumber(ARGV[3]), last - tonumber(ARGV[4]) + 1)
  if start <= last then
    entries = redis.call('XRANGE', KEYS[1], '0-' .. start, '+', 'COUNT', ARGV[4])
  end
elseif ARGV[2] == 'latest' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[4])
end
return {last, epoch, entries}
"#
);

/// The keys of one room.
#[derive(Clone)]
pub(crate) struct Keys {
    prefix: String,
    channel: String,
}

impl Keys {
    fn stream(&self) -> String {
        format!("{}:sealcast:s:{}", self.prefix, self.channel)
    }

    fn meta(&self) -> String {
        format!("{}:sealcast:m:{}", self.prefix, self.channel)
    }

    fn id(&self, key: &IdKey) -> String {
        // Length-prefixed: `who` and `id` are any text.
        format!(
            "{}:sealcast:i:{}:{}{}:{}",
            self.prefix,
            key.who.len(),
            key.who,
            key.id,
            self.channel
        )
    }
}

/// The part of `key` Redis Cluster hashes: the first `{…}` with something inside, else all of it.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = key.get(open + 1..)?;
    let close = rest.find('}')?;
    rest.get(..close).filter(|t| !t.is_empty())
}

/// The prefix that puts a key on `channel`'s slot: the channel's hash tag, or the channel itself as the tag;
/// `None` when a cluster cannot (braces in the name without a usable tag). Presence keys use it too.
pub(super) fn key_prefix(endpoint: &super::RedisEndpoint, channel: &str) -> Option<String> {
    tag_prefix(channel, matches!(endpoint, super::RedisEndpoint::Single(_)))
}

/// [`key_prefix`] on one server (`single`: no slots) or a cluster.
fn tag_prefix(channel: &str, single: bool) -> Option<String> {
    match hash_tag(channel) {
        Some(tag) => Some(format!("{{{tag}}}")),
        None if !channel.contains(['{', '}']) => Some(format!("{{{channel}}}")),
        // One server has no slots: any key works.
        None if single => Some(String::new()),
        None => None,
    }
}

/// What a script answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Appended {
    /// The position (for a duplicate, the original one); `None` for a claim outside history.
    pub(crate) position: Option<StreamPosition>,
    /// The idempotency key was already used.
    pub(crate) duplicate: bool,
    /// How many subscribers Redis handed an appended message to (0 for a duplicate or a claim).
    pub(crate) receivers: usize,
}

/// The bus could not do it: the queue is full or Redis failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unavailable;

type Reply = oneshot::Sender<Result<Appended, Unavailable>>;

enum Kind {
    Append,
    Claim,
}

fn bad_answer() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected history script answer"))
}

/// What the append script answered.
pub(crate) fn append_answer(v: &Value) -> redis::RedisResult<Appended> {
    let Value::Array(parts) = v else {
        return Err(bad_answer());
    };
    let (offset, epoch, dup, receivers) = match parts.as_slice() {
        [o, e, d] => (int(o), text(e), int(d), Some(0)),
        [o, e, d, n] => (int(o), text(e), int(d), int(n)),
        _ => return Err(bad_answer()),
    };
    match (offset, epoch, dup, receivers) {
        (Some(offset), Some(epoch), Some(dup), Some(n)) => Ok(Appended {
            position: Some(StreamPosition {
                offset: u64::try_from(offset).map_err(|_| bad_answer())?,
                epoch,
            }),
            duplicate: dup == 1,
            receivers: usize::try_from(n).unwrap_or(0),
        }),
        _ => Err(bad_answer()),
    }
}

/// What the claim script answered.
pub(crate) fn claim_answer(v: &Value) -> redis::RedisResult<Appended> {
    Ok(Appended {
        position: None,
        duplicate: int(v).ok_or_else(bad_answer)? == 1,
        receivers: 0,
    })
}

/// The keys of the room published on `channel`, or `None` when a cluster cannot keep them on the channel's slot
/// (braces without a usable hash tag in the name). On `single` (one server: no slots) any key works.
pub(crate) fn room_keys(channel: &str, single: bool) -> Option<Keys> {
    Some(Keys {
        prefix: tag_prefix(channel, single)?,
        channel: channel.to_owned(),
    })
}

/// The envelope's JSON (signed if the fleet signs) without its closing brace: the append script adds the
/// position.
pub(crate) fn envelope_head(codec: &Codec, envelope: &Envelope) -> Result<String, Unavailable> {
    let json = codec.encode(envelope);
    // Room for the position the script appends; receivers refuse larger envelopes.
    if json.len() + 64 > MAX_ENVELOPE_LEN {
        return Err(Unavailable);
    }
    json.strip_suffix('}').map(str::to_owned).ok_or(Unavailable)
}

/// The command that publishes in `mode`, as the scripts call it.
pub(crate) fn publish_command(mode: BusMode) -> &'static str {
    match mode {
        BusMode::Classic => "PUBLISH",
        BusMode::Sharded => "SPUBLISH",
    }
}

/// The append script for `envelope` (whose [`envelope_head`] is `head`), with the idempotency `key` if any.
pub(crate) fn append_cmd(
    keys: &Keys,
    envelope: &Envelope,
    head: String,
    key: Option<&IdKey>,
    limits: Limits,
    mode: BusMode,
) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(APPEND)
        .arg(if key.is_some() { 3 } else { 2 })
        .arg(keys.stream())
        .arg(keys.meta());
    if let Some(k) = key {
        cmd.arg(keys.id(k));
    }
    cmd.arg(new_epoch())
        .arg(limits.size)
        .arg(millis(limits.ttl))
        .arg(millis(limits.ttl.max(META_TTL)))
        .arg(now_ms())
        .arg(&envelope.event)
        .arg(envelope.data.get())
        .arg(publish_command(mode))
        .arg(&keys.channel)
        .arg(head);
    cmd
}

/// The claim script: publishes `payload` (an encoded envelope) if `key` is free for `ttl`.
pub(crate) fn claim_cmd(keys: &Keys, key: &IdKey, ttl: Duration, payload: String, mode: BusMode) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(CLAIM)
        .arg(1)
        .arg(keys.id(key))
        .arg(millis(ttl))
        .arg(publish_command(mode))
        .arg(&keys.channel)
        .arg(payload);
    cmd
}

/// A script queued for the publisher task.
/// Runs queued scripts in order (one round trip on one server) and answers each.
pub(super) async fn run_all(conn: &mut Conn, ops: Vec<Op>) -> bool {
    let cmds: Vec<redis::Cmd> = ops.iter().map(|op| op.cmd().clone()).collect();
    match conn.run_in_order::<Value>(&cmds).await {
        Ok(values) => {
            let mut values = values.into_iter();
            for op in ops {
                let answer = match values.next() {
                    Some(v) => op.read_answer(v),
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Parse,
                        "missing script answer",
                    ))),
                };
                op.answer(answer);
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, scripts = ops.len(), "redis history: scripts failed");
            for op in ops {
                op.answer(Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "redis bus: scripts failed",
                ))));
            }
            false
        }
    }
}

pub(crate) struct Op {
    cmd: redis::Cmd,
    kind: Kind,
    reply: Option<Reply>,
}

impl Op {
    /// The script command to run.
    pub(super) fn cmd(&self) -> &redis::Cmd {
        &self.cmd
    }

    /// The script's answer, read.
    pub(super) fn read_answer(&self, v: Value) -> redis::RedisResult<Appended> {
        match self.kind {
            Kind::Claim => claim_answer(&v),
            Kind::Append => append_answer(&v),
        }
    }

    pub(super) fn answer(self, result: redis::RedisResult<Appended>) {
        if let Err(e) = &result {
            tracing::warn!(error = %e, "redis history: script failed");
        }
        if let Some(tx) = self.reply {
            let _ = tx.send(result.map_err(|_| Unavailable));
        }
    }
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// How long the history lasts, as the scripts need it.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) size: usize,
    pub(crate) ttl: Duration,
}

/// One stored message.
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) event: String,
    pub(crate) data: Box<RawValue>,
    /// When it was appended (ms since the Unix epoch, the appender's clock).
    pub(crate) at_ms: u64,
}

/// A read: the room's position and the entries asked for.
pub(crate) struct Snapshot {
    pub(crate) position: StreamPosition,
    pub(crate) entries: Vec<Entry>,
}

/// What to read.
pub(crate) enum Read {
    /// Only the position.
    Position,
    /// Up to `count` entries from offset `from` on.
    After { from: u64, count: usize },
    /// The entries from offset `from` on, but only the latest `count` of the stream: what a recovery from
    /// `from - 1` or later can use, if it misses at most `count`.
    Recent { from: u64, count: usize },
    /// The latest `count` entries (returned oldest first).
    Latest { count: usize },
}

struct State {
    inner: Arc<Inner>,
    /// The connection reads go through (multiplexed; opened on first use, dropped on an error).
    reader: Mutex<Option<Conn>>,
    /// Recoveries sharing reads.
    replays: Replays,
}

/// The history store of a [`super::RedisBus`]. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RedisHistory(Arc<State>);

pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> String {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1).to_string()
}

fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id.get(..12).unwrap_or(&id).to_owned()
}

impl RedisHistory {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self(Arc::new(State {
            inner,
            reader: Mutex::new(None),
            replays: Replays::default(),
        }))
    }

    pub(super) fn replays(&self) -> &Replays {
        &self.0.replays
    }

    /// The keys of the room published on `channel` ([`room_keys`]).
    pub(crate) fn keys(&self, channel: &str) -> Option<Keys> {
        room_keys(
            channel,
            matches!(self.0.inner.endpoint, super::RedisEndpoint::Single(_)),
        )
    }

    fn enqueue(&self, cmd: redis::Cmd, kind: Kind, reply: Option<Reply>) -> Result<(), Unavailable> {
        let op = Box::new(Op { cmd, kind, reply });
        self.0
            .inner
            .publish_tx
            .try_send(Outgoing::Script(op))
            .map_err(|_| Unavailable)
    }

    /// Queues an append (with the idempotency `key`, if any) that publishes `envelope` with its position; with
    /// `reply`, answers when it ran.
    pub(crate) fn append(
        &self,
        keys: &Keys,
        envelope: &Envelope,
        key: Option<&IdKey>,
        limits: Limits,
        reply: bool,
    ) -> Result<Option<oneshot::Receiver<Result<Appended, Unavailable>>>, Unavailable> {
        let head = envelope_head(&self.0.inner.codec, envelope)?;
        let cmd = append_cmd(keys, envelope, head, key, limits, self.0.inner.mode);
        let (tx, rx) = if reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.enqueue(cmd, Kind::Append, tx)?;
        Ok(rx)
    }

    /// Queues a claim of an idempotency key outside history: publishes `envelope` if the key was free.
    pub(crate) fn claim(
        &self,
        keys: &Keys,
        envelope: &Envelope,
        key: &IdKey,
        ttl: Duration,
    ) -> Result<oneshot::Receiver<Result<Appended, Unavailable>>, Unavailable> {
        let payload = self.0.inner.codec.encode(envelope);
        if payload.len() > MAX_ENVELOPE_LEN {
            return Err(Unavailable);
        }
        let cmd = claim_cmd(keys, key, ttl, payload, self.0.inner.mode);
        let (tx, rx) = oneshot::channel();
        self.enqueue(cmd, Kind::Claim, Some(tx))?;
        Ok(rx)
    }

    /// Reads the room's position and, as asked, entries.
    pub(crate) async fn read(&self, keys: &Keys, what: Read, limits: Limits) -> Result<Snapshot, Unavailable> {
        let (mode, from, count) = match what {
            Read::Position => ("position", 0, 0),
            Read::After { from, count } => ("after", from, count),
            Read::Recent { from, count } => ("recent", from, count),
            Read::Latest { count } => ("latest", 0, count),
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(READ)
            .arg(2)
            .arg(keys.stream())
            .arg(keys.meta())
            .arg(new_epoch())
            .arg(mode)
            .arg(from)
            .arg(count.max(1))
            .arg(millis(limits.ttl.max(META_TTL)));
        // A connection broken since its last use (Redis restarted) fails once: then a fresh one is tried.
        let mut v = None;
        for _ in 0..2 {
            let mut conn = self.reader().await?;
            match conn.run::<Value>(&cmd).await {
                Ok(answer) => {
                    v = Some(answer);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "redis history: read failed");
                    *self.0.reader.lock() = None;
                }
            }
        }
        let v = v.ok_or(Unavailable)?;
        let mut snapshot = parse_snapshot(&v).ok_or(Unavailable)?;
        if matches!(what, Read::Latest { .. }) {
            snapshot.entries.reverse();
        }
        Ok(snapshot)
    }

    async fn reader(&self) -> Result<Conn, Unavailable> {
        if let Some(c) = self.0.reader.lock().clone() {
            return Ok(c);
        }
        let endpoint = &self.0.inner.endpoint;
        let conn = Conn::open(endpoint, None::<super::NoPush>).await.map_err(|e| {
            tracing::warn!(error = %e, "redis history: cannot connect");
            Unavailable
        })?;
        *self.0.reader.lock() = Some(conn.clone());
        Ok(conn)
    }
}

fn parse_snapshot(v: &Value) -> Option<Snapshot> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [last, epoch, entries] = parts.as_slice() else {
        return None;
    };
    let position = StreamPosition {
        offset: u64::try_from(int(last)?).ok()?,
        epoch: text(epoch)?,
    };
    let Value::Array(list) = entries else {
        return None;
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Value::Array(pair) = item else {
            return None;
        };
        let [id, fields] = pair.as_slice() else {
            return None;
        };
        let offset = text(id)?.strip_prefix("0-")?.parse().ok()?;
        let Value::Array(fields) = fields else {
            return None;
        };
        let (mut event, mut data, mut at_ms) = (None, None, 0);
        for kv in fields.chunks(2) {
            match kv {
                [k, v] => match text(k)?.as_str() {
                    "e" => event = text(v),
                    "d" => data = text(v).and_then(|d| RawValue::from_string(d).ok()),
                    "t" => at_ms = int(v).and_then(|t| u64::try_from(t).ok()).unwrap_or(0),
                    _ => {}
                },
                _ => return None,
            }
        }
        out.push(Entry {
            offset,
            event: event?,
            data: data?,
            at_ms,
        });
    }
    Some(Snapshot { position, entries: out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_tag_is_what_redis_cluster_hashes() {
        assert_eq!(hash_tag("ws:room:chat"), None);
        assert_eq!(hash_tag("ws:room:a{x}b"), Some("x"));
        assert_eq!(
            hash_tag("ws:room:a{}b{x}"),
            None,
            "an empty first tag hashes the whole key"
        );
        assert_eq!(hash_tag("ws:room:a}b"), None);
        assert_eq!(hash_tag("{ws:room:chat}:sealcast:s:ws:room:chat"), Some("ws:room:chat"));
    }
}

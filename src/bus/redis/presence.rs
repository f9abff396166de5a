//! Presence on Redis: who is in each presence room, cluster-wide, and the cleanup of instances that died.
//!
//! Per room, under the hash tag of the room's channel (so in a Redis Cluster they live on the shard of the room's
//! sharded channel, and the scripts may `SPUBLISH` on it): `{T}:sealcast:p:<channel>`, a hash from client id to
//! `"<instance> <since ms> u<user>"` (or `-` for no user), and `{T}:sealcast:pu:<channel>`, a hash from user to
//! its number of sessions in the room (the exact `users` count). Per instance: `sealcast:presence:rooms:{<id>}`,
//! the set of rooms it has entries in; for the fleet: `sealcast:presence:instances`, a sorted set of instance
//! ids scored by their last heartbeat (Redis's clock, `TIME`, so instances' clocks need not agree).
//!
//! Each server runs a writer task and a heartbeat task, each with a connection of its own (so that a long batch
//! of writes never delays a heartbeat). The registry records joins and leaves in the
//! [`LocalPresence`] index; the writer takes them, coalesces each client's changes to a room within a batch into
//! the last one, and runs one script per change: the write and, when it changed something, the `member_joined`
//! / `member_left` envelope's publish on the room's channel, atomically (while the room has at most
//! `presence_max_members` clients: larger rooms get no events). Queries go through the same writer after the
//! changes taken before them, so an instance always reads its own joins and leaves.
//!
//! Crash safety: every [`BEAT`] the heartbeat task scores this instance in the instances set and gets back the instances not
//! seen for [`DEAD_AFTER`]. For each, one survivor claims the cleanup (`SET NX` with a lease), removes the dead
//! instance's entries from each room in its rooms set, publishes `member_left` for them, and deletes the
//! instance. An instance that finds itself missing from the set (it was declared dead while paused, or Redis
//! lost its data) removes whatever entries of its own remain and writes every local member again. A restarted
//! process is a new instance (a new random id), so nothing of its previous life comes back.
//!
//! Everything read from Redis is parsed defensively: malformed entries are skipped, lists are bounded.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::history::{int, key_prefix, text};
use super::{Conn, Inner, NoPush, MAX_ENVELOPE_LEN};
use crate::presence::{time_of, Change, LocalPresence, Presence, PresenceError, PresenceMember, MAX_SINCE_MS};
use crate::protocol::{ClientId, Envelope, RoomName, Target, UserId};

/// How often an instance scores itself in the instances set.
pub(crate) const BEAT: Duration = Duration::from_secs(1);
/// An instance not seen for this long is dead: its members are removed and `member_left` sent for them. With
/// [`BEAT`], a killed instance's members are gone at most about `DEAD_AFTER + BEAT` (plus the cleanup's own
/// round trips) after its last heartbeat.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(5);
/// How long a survivor's claim on a dead instance's cleanup lasts; another survivor retries after it.
const CLAIM_FOR: Duration = Duration::from_secs(30);
/// Most entries one purge script removes (it is run again while it removes this many).
const PURGE_CHUNK: usize = 1_000;
/// Most dead instances handled per heartbeat.
const DEAD_PER_BEAT: usize = 16;
/// How long a query waits for the writer.
const QUERY_WAIT: Duration = Duration::from_secs(5);
/// Most queries waiting for the writer; more are answered `Unavailable`.
const MAX_QUERIES: usize = 4_096;

const INSTANCES: &str = "sealcast:presence:instances";

/// The fuzz target `redis_presence`: every reader of what Redis hands back, against an independent reading.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

/// Reads the user out of an entry's value (`"<instance> <since> u<user>"`), or nil.
macro_rules! user_of {
    () => {
        r#"
local function user_of(v)
  local a = string.find(v, ' ', 1, true)
  if not a then return nil end
  local b = string.find(v, ' ', a + 1, true)
  if not b then return nil end
  if string.sub(v, b + 1, b + 1) ~= 'u' then return nil end
  return string.sub(v, b + 2)
end
local function forget(key, v)
  local u = user_of(v)
  if u then
    if redis.call('HINCRBY', key, u, -1) <= 0 then redis.call('HDEL', key, u) end
  end
end
"#
    };
}

/// `KEYS`: members, users. `ARGV`: client, value, user (or ''), cap, publish command, channel, envelope (or '').
const ADD: &str = r#"
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if new == 1 and ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[3], 1) end
if new == 1 and ARGV[7] ~= '' and redis.call('HLEN', KEYS[1]) <= tonumber(ARGV[4]) then
  redis.call(ARGV[5], ARGV[6], ARGV[7])
end
return new
"#;

/// `KEYS`: members, users. `ARGV`: client, instance, cap, publish command, channel, envelope (or '').
const REMOVE: &str = concat!(
    user_of!(),
    r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local p = ARGV[2] .. ' '
if string.sub(v, 1, #p) ~= p then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
forget(KEYS[2], v)
if ARGV[6] ~= '' and redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call(ARGV[4], ARGV[5], ARGV[6])
end
return 1
"#
);

/// `KEYS`: members, users. `ARGV`: instance, most to remove. Answers `{clients left, {client, value, ...}}`.
const PURGE: &str = concat!(
    user_of!(),
    r#"
local all = redis.call('HGETALL', KEYS[1])
local p = ARGV[1] .. ' '
local max = tonumber(ARGV[2])
local out = {}
for i = 1, #all, 2 do
  local v = all[i + 1]
  if #out >= 2 * max then break end
  if string.sub(v, 1, #p) == p then
    redis.call('HDEL', KEYS[1], all[i])
    forget(KEYS[2], v)
    out[#out + 1] = all[i]
    out[#out + 1] = v
  end
end
return {redis.call('HLEN', KEYS[1]), out}
"#
);

/// `KEYS`: members, users. `ARGV`: most members listed. Answers `{clients, users, {client, value, ...}}`.
const QUERY: &str = r#"
local n = redis.call('HLEN', KEYS[1])
local u = redis.call('HLEN', KEYS[2])
local max = tonumber(ARGV[1])
local out = {}
if n <= max then
  out = redis.call('HGETALL', KEYS[1])
else
  local cursor = '0'
  repeat
    local r = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 1000)
    cursor = r[1]
    local kv = r[2]
    for i = 1, #kv, 2 do
      if #out >= 2 * max then break end
      out[#out + 1] = kv[i]
      out[#out + 1] = kv[i + 1]
    end
  until cursor == '0' or #out >= 2 * max
end
return {n, u, out}
"#;

/// `KEYS`: instances. `ARGV`: instance, dead after (ms), most dead listed. Answers `{1 if the instance was
/// missing, {dead instance, ...}}`.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local new = redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[3]))
return {new, dead}
"#;

/// What the tasks need to know of the server's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// `presence_max_members`: the longest member list, and the largest room with events.
    pub(crate) max_members: usize,
    /// `presence_events`.
    pub(crate) events: bool,
}

struct Query {
    room: RoomName,
    max: usize,
    reply: oneshot::Sender<Result<Presence, PresenceError>>,
}

struct State {
    inner: Arc<Inner>,
    me: Arc<str>,
    local: Arc<LocalPresence>,
    settings: Settings,
    queries: Mutex<Vec<Query>>,
    /// Set by the heartbeat task when this instance was missing from Redis: the writer removes what is left of
    /// its entries and writes every local member again.
    resync: AtomicBool,
    stop: CancellationToken,
    /// The writer, then the heartbeat task.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The heartbeat task, for the writer to wait for before it leaves the instances set.
    beat_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// One server's presence on a [`super::RedisBus`]: the handle its queries go through. Cheap to clone.
#[derive(Clone)]
pub(crate) struct RedisPresence(Arc<State>);

/// A room's keys.
struct RoomKeys {
    members: String,
    users: String,
    channel: String,
}

fn room_keys(inner: &Inner, room: &str) -> Option<RoomKeys> {
    let channel = Target::Room(RoomName::parse(room)?).channel();
    let prefix = key_prefix(&inner.endpoint, &channel)?;
    Some(RoomKeys {
        members: format!("{prefix}:sealcast:p:{channel}"),
        users: format!("{prefix}:sealcast:pu:{channel}"),
        channel,
    })
}

fn rooms_key(instance: &str) -> String {
    format!("sealcast:presence:rooms:{{{instance}}}")
}

fn claim_key(instance: &str) -> String {
    format!("sealcast:presence:purge:{{{instance}}}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An entry's value: `"<instance> <since ms> u<user>"` or `"<instance> <since ms> -"`.
fn value(instance: &str, since_ms: u64, user: Option<&UserId>) -> String {
    match user {
        Some(u) => format!("{instance} {since_ms} u{}", u.as_str()),
        None => format!("{instance} {since_ms} -"),
    }
}

/// Parses an entry read back from Redis (hostile input): its client id and value. A `since` past
/// [`MAX_SINCE_MS`] is malformed (the writer uses the clock; the answer shows it as a four-digit year).
fn member(client: &Value, value: &Value) -> Option<(ClientId, Option<UserId>, u64)> {
    let client = ClientId::parse(&text(client)?)?;
    let v = text(value)?;
    let mut parts = v.splitn(3, ' ');
    let _instance = parts.next()?;
    let since: u64 = parts.next()?.parse().ok().filter(|ms| *ms <= MAX_SINCE_MS)?;
    let user = match parts.next()? {
        "-" => None,
        u => Some(UserId::parse(u.strip_prefix('u')?)?),
    };
    Some((client, user, since))
}

fn bad() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Parse, "unexpected presence script answer"))
}

/// The longest instance id a heartbeat answer may name as dead (ids are UUIDs; longer ones are not ours).
const MAX_INSTANCE_LEN: usize = 128;

/// The dead instances listed in a heartbeat's answer, to clean up: at most [`DEAD_PER_BEAT`] of the first
/// [`DEAD_PER_BEAT`] entries, texts only, never `me`, none longer than [`MAX_INSTANCE_LEN`]; `None` when the list
/// is not a list.
fn dead_instances(dead: &Value, me: &str) -> Option<Vec<String>> {
    let Value::Array(dead) = dead else {
        return None;
    };
    Some(
        dead.iter()
            .take(DEAD_PER_BEAT)
            .filter_map(text)
            .filter(|id| id != me && id.len() <= MAX_INSTANCE_LEN)
            .collect(),
    )
}

/// A member a purge removed: its client and user.
type Removed = (ClientId, Option<UserId>);

/// A purge script's answer (`{clients left, {client, value, ...}}`): the clients left in the room, how many
/// entries were removed, and the removed members whose entries parse (the others are skipped).
fn purge_answer(v: Value) -> redis::RedisResult<(usize, usize, Vec<Removed>)> {
    let (left, removed) = two(v)?;
    let left = usize::try_from(int(&left).ok_or_else(bad)?).unwrap_or(0);
    let Value::Array(removed) = removed else {
        return Err(bad());
    };
    let members = removed
        .chunks(2)
        .filter_map(|pair| match pair {
            [c, v] => member(c, v).map(|(client, user, _)| (client, user)),
            _ => None,
        })
        .collect();
    Ok((left, removed.len() / 2, members))
}

/// The rooms an instance's rooms set lists (`SMEMBERS`): an error unless every entry is text; the texts that are
/// no room name are skipped.
fn listed_rooms(v: Value) -> redis::RedisResult<Vec<RoomName>> {
    let rooms: Vec<String> = redis::from_redis_value(v)?;
    Ok(rooms.iter().filter_map(|r| RoomName::parse(r)).collect())
}

/// A script's two-part answer.
fn two(v: Value) -> redis::RedisResult<(Value, Value)> {
    let Value::Array(parts) = v else {
        return Err(bad());
    };
    match <[Value; 2]>::try_from(parts) {
        Ok([a, b]) => Ok((a, b)),
        Err(_) => Err(bad()),
    }
}

impl RedisPresence {
    /// Starts the writer and heartbeat tasks of server `me`.
    pub(super) fn start(inner: Arc<Inner>, me: Arc<str>, local: Arc<LocalPresence>, settings: Settings) -> Self {
        let stop = inner.stop.child_token();
        let presence = Self(Arc::new(State {
            inner,
            me,
            local,
            settings,
            queries: Mutex::new(Vec::new()),
            resync: AtomicBool::new(false),
            stop,
            tasks: Mutex::new(Vec::new()),
            beat_task: Mutex::new(None),
        }));
        // Heartbeats on a task and a connection of their own: a long batch of writes (a join storm on a cluster,
        // one round trip per command) must not delay them past DEAD_AFTER.
        *presence.0.beat_task.lock() = Some(tokio::spawn(heartbeats(presence.clone())));
        *presence.0.tasks.lock() = vec![tokio::spawn(worker(presence.clone()))];
        presence
    }

    /// Who is in `room`, read after this instance's pending joins and leaves are written.
    pub(crate) async fn query(&self, room: &RoomName, max: usize) -> Result<Presence, PresenceError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = self.0.queries.lock();
            if q.len() >= MAX_QUERIES || self.0.stop.is_cancelled() {
                return Err(PresenceError::Unavailable);
            }
            q.push(Query {
                room: room.clone(),
                max,
                reply: tx,
            });
        }
        self.0.local.wake();
        match tokio::time::timeout(QUERY_WAIT, rx).await {
            Ok(Ok(answer)) => answer,
            _ => Err(PresenceError::Unavailable),
        }
    }

    /// Stops the tasks after it wrote what is pending (the server's clients are gone by then: their leaves) and
    /// removed this instance from the instances set.
    pub(crate) async fn shutdown(&self) {
        self.0.stop.cancel();
        self.0.local.wake();
        let tasks = std::mem::take(&mut *self.0.tasks.lock());
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }

    fn publish_command(&self) -> &'static str {
        self.0.inner.mode.publish_command()
    }

    /// The envelope of a presence event, encoded (signed if the fleet signs), or '' when none is sent.
    fn envelope(&self, room: &RoomName, joined: bool, client: ClientId, user: Option<&UserId>) -> String {
        if !self.0.settings.events {
            return String::new();
        }
        Envelope::presence(self.0.me.to_string(), room.clone(), joined, client, user)
            .map(|env| self.0.inner.codec.encode(&env))
            .filter(|json| json.len() <= MAX_ENVELOPE_LEN)
            .unwrap_or_default()
    }

    /// The script of one change, or `None` for a room whose keys cannot live on its channel's slot.
    fn change_cmd(&self, c: &Change) -> Option<redis::Cmd> {
        let keys = room_keys(&self.0.inner, c.room.as_str())?;
        let cap = self.0.settings.max_members;
        let env = self.envelope(&c.room, c.joined, c.client, c.user.as_ref());
        let mut cmd = redis::cmd("EVAL");
        if c.joined {
            cmd.arg(ADD)
                .arg(2)
                .arg(&keys.members)
                .arg(&keys.users)
                .arg(c.client.to_string())
                .arg(value(&self.0.me, c.since_ms, c.user.as_ref()))
                .arg(c.user.as_ref().map_or("", UserId::as_str))
                .arg(cap)
                .arg(self.publish_command())
                .arg(&keys.channel)
                .arg(env);
        } else {
            cmd.arg(REMOVE)
                .arg(2)
                .arg(&keys.members)
                .arg(&keys.users)
                .arg(c.client.to_string())
                .arg(&*self.0.me)
                .arg(cap)
                .arg(self.publish_command())
                .arg(&keys.channel)
                .arg(env);
        }
        Some(cmd)
    }

    /// Removes `instance`'s entries from every room it listed, with `member_left` for each; true when done.
    async fn purge(&self, conn: &mut Conn, instance: &str) -> redis::RedisResult<()> {
        let rooms = listed_rooms(conn.run(redis::cmd("SMEMBERS").arg(rooms_key(instance))).await?)?;
        for room in rooms {
            let Some(keys) = room_keys(&self.0.inner, room.as_str()) else {
                continue;
            };
            loop {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(PURGE)
                    .arg(2)
                    .arg(&keys.members)
                    .arg(&keys.users)
                    .arg(instance)
                    .arg(PURGE_CHUNK);
                let (left, count, removed) = purge_answer(conn.run(&cmd).await?)?;
                // Events while the room, with those removed, had at most `max_members` clients.
                if self.0.settings.events && left.saturating_add(count) <= self.0.settings.max_members {
                    let mut publishes = Vec::new();
                    for (client, user) in removed {
                        let env = self.envelope(&room, false, client, user.as_ref());
                        if !env.is_empty() {
                            publishes.push(super::publish_cmd(self.0.inner.mode, &keys.channel, &env));
                        }
                    }
                    conn.run_in_order::<Value>(&publishes).await?;
                }
                if count < PURGE_CHUNK {
                    break;
                }
            }
        }
        conn.run::<Value>(redis::cmd("DEL").arg(rooms_key(instance))).await?;
        Ok(())
    }

    async fn answer(&self, conn: &mut Conn, q: &Query) -> Result<Presence, PresenceError> {
        let keys = room_keys(&self.0.inner, q.room.as_str()).ok_or(PresenceError::Unavailable)?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(QUERY).arg(2).arg(&keys.members).arg(&keys.users).arg(q.max);
        let v: Value = conn.run(&cmd).await.map_err(|e| {
            tracing::warn!(error = %e, "redis presence: query failed");
            PresenceError::Unavailable
        })?;
        parse_query(&q.room, &v, q.max).ok_or(PresenceError::Unavailable)
    }
}

fn parse_query(room: &RoomName, v: &Value, max: usize) -> Option<Presence> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [clients, users, list] = parts.as_slice() else {
        return None;
    };
    let clients = usize::try_from(int(clients)?).ok()?;
    let users = usize::try_from(int(users)?).ok()?;
    let Value::Array(list) = list else {
        return None;
    };
    let members: Vec<PresenceMember> = list
        .chunks(2)
        .take(max)
        .filter_map(|pair| match pair {
            [c, v] => member(c, v),
            _ => None,
        })
        .map(|(client, user, since)| PresenceMember {
            client: client.to_string(),
            user: user.map(|u| u.as_str().to_owned()),
            since: time_of(since),
        })
        .collect();
    Some(Presence {
        room: room.as_str().to_owned(),
        truncated: members.len() < clients,
        members,
        clients,
        users,
    })
}

/// Each client's changes to a room reduced to the last one, in the order of those last changes.
fn coalesce(changes: Vec<Change>) -> Vec<Change> {
    let mut seen = HashSet::new();
    let mut out: Vec<Change> = changes
        .into_iter()
        .rev()
        .filter(|c| seen.insert((c.room.clone(), c.client)))
        .collect();
    out.reverse();
    out
}

/// What the writer keeps between rounds.
struct Worker {
    p: RedisPresence,
    conn: Option<Conn>,
    /// Changes taken but not yet written (Redis was unreachable).
    carry: Vec<Change>,
    /// Rooms this instance's rooms set lists.
    listed: HashSet<RoomName>,
    /// This instance must remove its remaining entries and write every local member again.
    resync: bool,
}

/// The connection in `slot`, opened if there is none.
async fn connection(slot: &mut Option<Conn>, endpoint: &super::RedisEndpoint) -> Option<Conn> {
    if let Some(c) = slot {
        return Some(c.clone());
    }
    match Conn::open(endpoint, None::<NoPush>).await {
        Ok(c) => {
            *slot = Some(c.clone());
            Some(c)
        }
        Err(e) => {
            tracing::warn!(error = %e, "redis presence: cannot connect");
            None
        }
    }
}

/// Logs a failure and drops the connection (the next use opens a fresh one).
fn failed(slot: &mut Option<Conn>, what: &str, e: &redis::RedisError) {
    tracing::warn!(error = %e, "redis presence: {what} failed");
    *slot = None;
}

impl Worker {
    async fn conn(&mut self) -> Option<Conn> {
        connection(&mut self.conn, &self.p.0.inner.endpoint).await
    }

    fn failed(&mut self, what: &str, e: &redis::RedisError) {
        failed(&mut self.conn, what, e);
    }

    /// Writes the pending changes (and this instance's rooms set) in order.
    async fn write(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        if self.p.0.resync.swap(false, Ordering::AcqRel) {
            self.resync = true;
        }
        let pending = self.p.0.local.take();
        if pending.overflowed {
            self.carry.clear();
            self.resync = true;
        }
        self.carry.extend(pending.changes);
        if self.carry.len() > crate::presence::MAX_PENDING {
            self.carry.clear();
            self.resync = true;
        }
        if self.resync {
            self.carry.clear();
            self.p.purge(conn, &self.p.0.me).await?;
            self.listed.clear();
            self.carry = self
                .p
                .0
                .local
                .all()
                .into_iter()
                .map(|(room, client, l)| Change {
                    room,
                    client,
                    user: l.user,
                    since_ms: l.since_ms,
                    joined: true,
                })
                .collect();
            self.resync = false;
        }
        let changes = coalesce(std::mem::take(&mut self.carry));
        let rooms = rooms_key(&self.p.0.me);
        let mut cmds = Vec::with_capacity(changes.len() + 4);
        let mut listed = self.listed.clone();
        for c in &changes {
            // Listed before the entry is written: a cleanup after a crash must find every room with entries.
            if c.joined && listed.insert(c.room.clone()) {
                cmds.push(redis::cmd("SADD").arg(&rooms).arg(c.room.as_str()).clone());
            }
            if let Some(cmd) = self.p.change_cmd(c) {
                cmds.push(cmd);
            }
            if !c.joined && self.p.0.local.count(c.room.as_str()) == 0 && listed.remove(&c.room) {
                cmds.push(redis::cmd("SREM").arg(&rooms).arg(c.room.as_str()).clone());
            }
        }
        if cmds.is_empty() {
            return Ok(());
        }
        match conn.run_in_order::<Value>(&cmds).await {
            Ok(_) => {
                self.listed = listed;
                Ok(())
            }
            Err(e) => {
                // Written again on the next round (the scripts are idempotent; events only on a real change).
                self.carry = changes;
                Err(e)
            }
        }
    }

    /// Answers `queries` (taken before the writes: every change recorded before them is written by now).
    async fn answer(&mut self, queries: Vec<Query>, conn: Option<&mut Conn>) {
        match conn {
            Some(conn) => {
                for q in queries {
                    let answer = self.p.answer(conn, &q).await;
                    let _ = q.reply.send(answer);
                }
            }
            None => {
                for q in queries {
                    let _ = q.reply.send(Err(PresenceError::Unavailable));
                }
            }
        }
    }

    /// One round: write, then answer the queries that were waiting when it began. A query is queued after the
    /// changes its client made before it, so taking the queries first means the writes that follow include all
    /// of those; queries that arrive meanwhile wake the next round.
    async fn round(&mut self) {
        let queries = std::mem::take(&mut *self.p.0.queries.lock());
        let Some(mut conn) = self.conn().await else {
            self.answer(queries, None).await;
            return;
        };
        let ok = match self.write(&mut conn).await {
            Ok(()) => true,
            Err(e) => {
                self.failed("write", &e);
                false
            }
        };
        self.answer(queries, ok.then_some(&mut conn)).await;
    }

    /// Stopping: the last leaves are written, and this instance leaves the set (nothing of it is left to clean).
    async fn finish(&mut self) {
        let Some(mut conn) = self.conn().await else {
            return;
        };
        let queries = std::mem::take(&mut *self.p.0.queries.lock());
        self.answer(queries, None).await;
        if self.write(&mut conn).await.is_err() {
            return;
        }
        let me = self.p.0.me.clone();
        // The heartbeat task stops first: it must not score this instance again after it left the set.
        let beats = self.p.0.beat_task.lock().take();
        if let Some(beats) = beats {
            let _ = tokio::time::timeout(Duration::from_secs(3), beats).await;
        }
        if self.p.0.local.all().is_empty() {
            let _ = conn.run::<Value>(redis::cmd("DEL").arg(rooms_key(&me))).await;
            let _ = conn.run::<Value>(redis::cmd("ZREM").arg(INSTANCES).arg(&*me)).await;
        }
    }
}

async fn worker(p: RedisPresence) {
    let mut w = Worker {
        p: p.clone(),
        conn: None,
        carry: Vec::new(),
        listed: HashSet::new(),
        resync: false,
    };
    // Also every BEAT: changes that could not be written (Redis was down) are retried without a new one.
    let mut retry = tokio::time::interval(BEAT);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = p.0.stop.cancelled() => break,
            _ = p.0.local.changed() => {}
            _ = retry.tick() => {}
        }
        w.round().await;
    }
    w.finish().await;
}

/// The heartbeat task: scores this instance every [`BEAT`] and removes dead instances' members.
struct Beater {
    p: RedisPresence,
    conn: Option<Conn>,
    /// The first heartbeat went through (a missing entry after it means this instance was removed).
    registered: bool,
}

impl Beater {
    async fn heartbeat(&mut self, conn: &mut Conn) -> redis::RedisResult<()> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(HEARTBEAT)
            .arg(1)
            .arg(INSTANCES)
            .arg(&*self.p.0.me)
            .arg(millis(DEAD_AFTER))
            .arg(DEAD_PER_BEAT);
        let (new, dead) = two(conn.run(&cmd).await?)?;
        if int(&new) == Some(1) && self.registered {
            tracing::warn!("redis presence: this instance was missing from Redis; registering its members again");
            self.p.0.resync.store(true, Ordering::Release);
            self.p.0.local.wake();
        }
        self.registered = true;
        for id in dead_instances(&dead, &self.p.0.me).ok_or_else(bad)? {
            let claimed: Value = conn
                .run(
                    redis::cmd("SET")
                        .arg(claim_key(&id))
                        .arg(&*self.p.0.me)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(CLAIM_FOR)),
                )
                .await?;
            if matches!(claimed, Value::Nil) {
                continue;
            }
            tracing::info!(instance = %id, "redis presence: removing the members of a dead instance");
            self.p.purge(conn, &id).await?;
            conn.run::<Value>(redis::cmd("ZREM").arg(INSTANCES).arg(&id)).await?;
        }
        Ok(())
    }
}

async fn heartbeats(p: RedisPresence) {
    let mut b = Beater {
        p: p.clone(),
        conn: None,
        registered: false,
    };
    let mut beat = tokio::time::interval(BEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = p.0.stop.cancelled() => return,
            _ = beat.tick() => {}
        }
        let Some(mut conn) = connection(&mut b.conn, &p.0.inner.endpoint).await else {
            continue;
        };
        if let Err(e) = b.heartbeat(&mut conn).await {
            failed(&mut b.conn, "heartbeat", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    const C1: &str = "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11";

    #[test]
    fn entries_read_back_are_checked() {
        let ok = member(&bulk(C1), &bulk("inst 1700000000000 ualice")).unwrap();
        assert_eq!(
            (ok.1.map(|u| u.as_str().to_owned()), ok.2),
            (Some("alice".into()), 1_700_000_000_000)
        );
        assert!(member(&bulk(C1), &bulk("inst 5 -")).is_some_and(|m| m.1.is_none()));
        for bad in ["inst", "inst x ualice", "inst 5 alice", "inst 5", ""] {
            assert!(member(&bulk(C1), &bulk(bad)).is_none(), "{bad:?}");
        }
        assert!(member(&bulk("not-a-client"), &bulk("inst 5 -")).is_none());
        assert!(member(&Value::Int(3), &bulk("inst 5 -")).is_none());
    }

    #[test]
    fn a_query_answer_is_bounded_and_counts_are_taken_as_given() {
        let room = RoomName::parse("chat").unwrap();
        let list: Vec<Value> = (0..10).flat_map(|_| [bulk(C1), bulk("i 1 -")]).collect();
        let v = Value::Array(vec![Value::Int(10_000), Value::Int(7), Value::Array(list)]);
        let p = parse_query(&room, &v, 3).unwrap();
        assert_eq!((p.members.len(), p.clients, p.users, p.truncated), (3, 10_000, 7, true));
        assert!(parse_query(
            &room,
            &Value::Array(vec![Value::Int(-1), Value::Int(0), Value::Array(vec![])]),
            3
        )
        .is_none());
        assert!(parse_query(&room, &Value::Nil, 3).is_none());
    }

    #[test]
    fn a_clients_changes_to_a_room_coalesce_into_the_last() {
        let room = RoomName::parse("chat").unwrap();
        let (a, b) = (ClientId::random(), ClientId::random());
        let change = |client, joined| Change {
            room: room.clone(),
            client,
            user: None,
            since_ms: 0,
            joined,
        };
        let out = coalesce(vec![change(a, true), change(b, true), change(a, false)]);
        let got: Vec<(ClientId, bool)> = out.iter().map(|c| (c.client, c.joined)).collect();
        assert_eq!(got, [(b, true), (a, false)]);
    }
}

//! Real `redis-server` processes for tests: one server, or a cluster built with `redis-cli --cluster create`.
//! Every process dies with its handle, and a watchdog kills it if the test process itself dies first.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port that is free now, with its cluster-bus port (+10000) free too, neither of them handed out before in
/// this process: the suites of one test binary run in parallel, and the kernel may offer a port again as soon as
/// the probe closes it, before the `redis-server` it was picked for has bound it.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port >= 55_000 {
            continue;
        }
        let bus = port + 10_000;
        if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
            if !handed_out.contains(&port) && !handed_out.contains(&bus) {
                handed_out.extend([port, bus]);
                return port;
            }
        }
    }
}

/// One `redis-server`.
pub struct Redis {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Redis {
    /// A fresh standalone server on a free port.
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.path().to_str().expect("utf8 dir"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut r = Self {
            port,
            args,
            child: None,
            dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        // `exec` makes the shell become redis-server; the background watchdog kills it if the test process dies.
        let script = format!(
            "(while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill -9 $$ 2>/dev/null) >/dev/null 2>&1 & exec redis-server \"$@\"",
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps.sh)");
        self.child = Some(child);
        wait_for_ping(self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server vanishes without a goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (after [`Redis::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs `redis-cli -p <port> args...` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

fn wait_for_ping(port: u16) {
    let start = Instant::now();
    while !ping(port) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "redis-server on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Redis Cluster: `masters` masters, each with `replicas` replicas.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        let n = masters * (1 + replicas);
        let nodes: Vec<Redis> = (0..n)
            .map(|_| {
                Redis::start_with(
                    free_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-config-file",
                        "nodes.conf",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|r| format!("127.0.0.1:{}", r.port)).collect();
        let replicas = replicas.to_string();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Self { nodes };
        c.wait_ok();
        c.wait_replication(replicas.parse().expect("count"));
        c
    }

    /// Waits until every replica has an up link and every master sees its replicas (a replica that never
    /// synced refuses to fail over).
    fn wait_replication(&self, replicas: usize) {
        let start = Instant::now();
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info = n.cli(&["info", "replication"]);
                if info.contains("role:slave") {
                    info.contains("master_link_status:up")
                } else {
                    info.contains(&format!("connected_slaves:{replicas}"))
                }
            });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cluster replication did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every live node reports `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let start = Instant::now();
        loop {
            let ok = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// The index of the node currently serving `channel`'s slot as master.
    pub fn master_of(&self, channel: &str) -> usize {
        self.try_master_of(channel)
            .unwrap_or_else(|| panic!("no master serves {channel}"))
    }

    /// The index of the live node serving `channel`'s slot as master, per the first live node's view; `None`
    /// while a failover is in progress.
    pub fn try_master_of(&self, channel: &str) -> Option<usize> {
        let live = self.nodes.iter().find(|n| n.is_running()).expect("a live node");
        let slot: u16 = live
            .cli(&["cluster", "keyslot", channel])
            .trim()
            .parse()
            .expect("keyslot");
        let nodes = live.cli(&["cluster", "nodes"]);
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let owns = f[8..].iter().any(|range| {
                let mut ends = range.splitn(2, '-').map(|x| x.parse::<u16>().ok());
                match (ends.next().flatten(), ends.next()) {
                    (Some(a), None) => a == slot,
                    (Some(a), Some(Some(b))) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if owns {
                let port: u16 = f[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("node port");
                return self.nodes.iter().position(|n| n.port == port);
            }
        }
        None
    }

    /// Moves the (key-less) slot of `channel` from its master to another master; returns (from, to) indexes.
    pub fn move_slot_of(&self, channel: &str) -> (usize, usize) {
        let from = self.master_of(channel);
        let slot = self.nodes[from].cli(&["cluster", "keyslot", channel]).trim().to_owned();
        let to = (0..self.nodes.len())
            .find(|&i| {
                i != from
                    && self.nodes[i].is_running()
                    && self.nodes[i].cli(&["info", "replication"]).contains("role:master")
            })
            .expect("another master");
        let id = |i: usize| self.nodes[i].cli(&["cluster", "myid"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        self.nodes[to].cli(&["cluster", "setslot", &slot, "importing", &from_id]);
        self.nodes[from].cli(&["cluster", "setslot", &slot, "migrating", &to_id]);
        self.nodes[to].cli(&["cluster", "setslot", &slot, "node", &to_id]);
        self.nodes[from].cli(&["cluster", "setslot", &slot, "node", &to_id]);
        let start = Instant::now();
        while self.nodes.iter().filter(|n| n.is_running()).any(|n| {
            !n.cli(&["cluster", "nodes"])
                .lines()
                .any(|l| l.starts_with(&to_id) && l.split_whitespace().skip(8).any(|r| r == slot))
        }) {
            assert!(start.elapsed() < Duration::from_secs(10), "slot move did not propagate");
            std::thread::sleep(Duration::from_millis(20));
        }
        (from, to)
    }

    /// Sum of `PUBSUB SHARDNUMSUB channel` over every live node.
    pub fn shard_subscribers(&self, channel: &str) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| {
                let out = n.cli(&["pubsub", "shardnumsub", channel]);
                out.lines()
                    .nth(1)
                    .and_then(|l| l.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

// ---- sealcast instances on a Redis bus ----

use crate::common::{id_of, Client, TestServer, WAIT};
use futures_util::StreamExt;
use sealcast::bus::{RedisBus, RedisBusBuilder};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A test server with its Redis bus.
pub struct Instance {
    pub t: TestServer,
    pub bus: RedisBus,
}

impl Instance {
    /// Builds the bus, starts a server on it and waits for the subscription.
    pub async fn start(bus: RedisBusBuilder) -> Self {
        let bus = bus.build().expect("bus");
        let t = TestServer::start(crate::common::builder().bus(bus.clone())).await;
        assert!(bus.wait_ready(WAIT).await, "bus ready");
        Self { t, bus }
    }
}

impl Instance {
    /// Like [`Self::start`], with client publishes on and history for `chat:*` rooms keeping `size` messages.
    pub async fn start_history(bus: RedisBusBuilder, size: usize) -> Self {
        Self::start_history_queue(bus, size, 4096).await
    }

    /// [`Self::start_history`] with an outbound queue of `queue` messages (the most a recovery replays).
    pub async fn start_history_queue(bus: RedisBusBuilder, size: usize, queue: usize) -> Self {
        let bus = bus.build().expect("bus");
        let b = crate::common::builder()
            .bus(bus.clone())
            .allow_client_publish(true)
            .history_rooms(vec!["chat:*".into()])
            .history_size(size)
            .outbound_queue(queue);
        let t = TestServer::start(b).await;
        assert!(bus.wait_ready(WAIT).await, "bus ready");
        Self { t, bus }
    }
}

impl Instance {
    /// Like [`Self::start`], with presence in `chat:*` rooms (at most `max_members` listed).
    pub async fn start_presence(bus: RedisBusBuilder, max_members: usize) -> Self {
        let bus = bus.build().expect("bus");
        let b = crate::common::builder()
            .bus(bus.clone())
            .presence_rooms(vec!["chat:*".into()])
            .presence_max_members(max_members);
        let t = TestServer::start(b).await;
        assert!(bus.wait_ready(WAIT).await, "bus ready");
        Self { t, bus }
    }
}

/// Waits until every instance's interest changes are applied on Redis.
pub async fn settle(instances: &[&Instance]) {
    for i in instances {
        assert!(i.bus.settled(WAIT).await, "subscriptions settled");
    }
}

/// The next `event` frame within `within`, skipping other events; `None` on timeout.
pub async fn try_event(c: &mut Client, event: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(deadline, c.ws.next()).await.ok()??;
        if let Ok(Message::Text(t)) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["event"] == event {
                return Some(v["data"].clone());
            }
        }
    }
}

/// Sends `probe` events to `user` from `from` until `to` receives one; returns the time since `since`.
pub async fn probe_until_delivered(
    from: &sealcast::Server,
    user: &str,
    to: &mut Client,
    since: Instant,
    limit: Duration,
) -> Duration {
    for n in 0u64.. {
        from.send_to_user(user, "probe", &n).expect("send");
        if try_event(to, "probe", Duration::from_millis(50)).await.is_some() {
            break;
        }
        assert!(since.elapsed() < limit, "delivery did not resume within {limit:?}");
    }
    since.elapsed()
}

/// Clients of the cross-instance matrix: alice on instances 1 and 2, bob on instance 3.
pub struct Matrix {
    pub a1: Client,
    pub d1: Value,
    pub a2: Client,
    pub d2: Value,
    pub b3: Client,
}

/// Logs the matrix clients in and checks user, room, client, broadcast and `exclude` delivery across three
/// instances, exactly once each.
pub async fn cross_instance_matrix(s1: &Instance, s2: &Instance, s3: &Instance) -> Matrix {
    let (mut a1, d1) = s1.t.login("user:alice").await;
    let (mut a2, d2) = s2.t.login("user:alice").await;
    let (mut b3, _) = s3.t.login("user:bob").await;
    settle(&[s1, s2, s3]).await;

    s3.t.server.send_to_user("alice", "u", &1).unwrap();
    assert_eq!(a1.recv().await, json!({"event": "u", "data": 1}));
    assert_eq!(a2.recv().await, json!({"event": "u", "data": 1}));
    s1.t.server.send_to_room("ws-default", "r", &2, &[]).unwrap();
    for c in [&mut a1, &mut a2, &mut b3] {
        assert_eq!(c.recv().await, json!({"event": "r", "data": 2}));
    }
    s3.t.server.send_to_client(&id_of(&d1), "c", &3).unwrap();
    assert_eq!(a1.recv().await, json!({"event": "c", "data": 3}));
    s3.t.server.broadcast("b", &4, &[&id_of(&d2)]).unwrap();
    assert_eq!(a1.recv().await, json!({"event": "b", "data": 4}));
    assert_eq!(b3.recv().await, json!({"event": "b", "data": 4}));
    s2.t.server
        .send_to_room("ws-default", "rx", &5, &[&id_of(&d1)])
        .unwrap();
    assert_eq!(a2.recv().await, json!({"event": "rx", "data": 5}));
    assert_eq!(b3.recv().await, json!({"event": "rx", "data": 5}));
    // `send` to a client id living on another instance.
    s1.t.server.send(Some(&id_of(&d2)), "dm", &6).unwrap();
    assert_eq!(a2.recv().await, json!({"event": "dm", "data": 6}));
    // No duplicates anywhere.
    for c in [&mut a1, &mut a2, &mut b3] {
        c.expect_silence().await;
    }
    for s in [s1, s2, s3] {
        assert_eq!(s.bus.stats().rejected, 0);
        assert_eq!(s.bus.stats().publish_dropped, 0);
    }
    Matrix { a1, d1, a2, d2, b3 }
}

/// Four instances on `redis`, a room whose only member is on the first, `n` messages published to it by an
/// emitter: returns how many pub/sub messages the four instances received in total (interest-based: `n`;
/// patterns, like the reference: `4n`).
pub async fn received_for_room_on_one_of_four(
    redis: &Redis,
    subscriptions: sealcast::bus::Subscriptions,
    n: u64,
) -> u64 {
    use sealcast::bus::RedisEndpoint;
    let mut instances = Vec::new();
    for _ in 0..4 {
        let bus = RedisBus::builder(RedisEndpoint::single(redis.url())).subscriptions(subscriptions);
        instances.push(Instance::start(bus).await);
    }
    let room = format!("solo-{subscriptions:?}");
    let (mut client, d) = instances[0].t.login("user:solo").await;
    instances[0].t.server.join_room(&id_of(&d), &room).unwrap();
    for i in &instances {
        assert!(i.bus.settled(WAIT).await);
    }
    let received = |instances: &[Instance]| -> u64 { instances.iter().map(|i| i.bus.stats().received).sum() };
    let before = received(&instances);
    let emitter = sealcast::Emitter::connect(RedisEndpoint::single(redis.url()))
        .await
        .unwrap();
    for k in 0..n {
        emitter.to_room(&room, "m", &k, &[]).await.unwrap();
    }
    for k in 0..n {
        assert_eq!(client.recv().await, json!({"event": "m", "data": k}));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    received(&instances) - before
}

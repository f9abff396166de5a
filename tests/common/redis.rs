//! Real `redis-server` processes for tests: one server, or a cluster built with `redis-cli --cluster create`.
//! Every process dies with its handle, and a watchdog kills it if the test process itself dies first.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that is free now, with its cluster-bus port (+10000) free too.
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
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
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
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
        let addrs: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
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
        c
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
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cluster did not become ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Redis::url).collect()
    }

    /// The index of the node currently serving `channel`'s slot as master.
    pub fn master_of(&self, channel: &str) -> usize {
        let live = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node");
        let slot: u16 = live
            .cli(&["cluster", "keyslot", channel])
            .trim()
            .parse()
            .expect("keyslot");
        let shards = live.cli(&["cluster", "slots"]);
        // Plain `redis-cli` output: start, end, then per node ip, port, id (master first).
        let lines: Vec<&str> = shards.lines().map(str::trim).collect();
        let mut i = 0;
        while i + 3 < lines.len() {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>()) {
                if (start..=end).contains(&slot) && lines[i + 2] == "127.0.0.1" {
                    let port: u16 = lines[i + 3].parse().expect("port");
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.port == port)
                        .expect("known node");
                }
            }
            i += 1;
        }
        panic!("no master for slot {slot}: {shards}");
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

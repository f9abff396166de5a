//! sealcast instances on real `redis-server` processes (one server, a cluster, faults). One test binary; the
//! harness is `tests/common/redis.rs`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/redis.rs"]
mod redis_harness;

mod cluster;
mod faults;
mod history;
mod presence;
mod single;

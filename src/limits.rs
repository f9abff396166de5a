//! Abuse limits: token buckets for rates, and per-IP connection accounting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// A rate: `per_second` sustained, bursts up to `burst`. A rate of zero disables the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained events per second.
    pub per_second: f64,
    /// Events allowed at once.
    pub burst: f64,
}

impl Rate {
    /// `per_second` sustained with bursts of `burst`.
    pub const fn new(per_second: f64, burst: f64) -> Self {
        Self { per_second, burst }
    }

    /// No limit.
    pub const UNLIMITED: Self = Self::new(0.0, 0.0);

    fn is_unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

/// A token bucket (pure: the caller passes the time).
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst.max(1.0),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst.max(1.0)
    }
}

/// Why a new connection was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` reached.
    Global,
    /// `max_connections_per_ip` reached.
    PerIp,
    /// `connection_rate_per_ip` exceeded.
    Rate,
}

impl Refusal {
    /// The label counting this refusal.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::PerIp => "per_ip",
            Self::Rate => "rate",
        }
    }
}

struct IpState {
    open: usize,
    bucket: Bucket,
}

/// Open connections, globally and per client IP, and the per-IP connection rate.
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    rate: Rate,
    state: Mutex<(usize, HashMap<IpAddr, IpState>)>,
}

/// Releases a connection slot when dropped.
pub(crate) struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_ip: usize, rate: Rate) -> Self {
        Self {
            max_total,
            max_per_ip,
            rate,
            state: Mutex::new((0, HashMap::new())),
        }
    }

    /// Claims a slot for a connection from `ip` (unknown when the server was not given peer addresses).
    pub(crate) fn acquire(self: &Arc<Self>, ip: Option<IpAddr>, now: Instant) -> Result<Slot, Refusal> {
        let mut guard = self.state.lock();
        let (total, per_ip) = &mut *guard;
        if *total >= self.max_total {
            return Err(Refusal::Global);
        }
        if let Some(ip) = ip {
            if per_ip.len() > 4096 {
                // Forget idle addresses so the table stays bounded by the live connections.
                let rate = self.rate;
                per_ip.retain(|_, s| s.open > 0 || !s.bucket.is_full(rate, now));
            }
            let entry = per_ip.entry(ip).or_insert_with(|| IpState {
                open: 0,
                bucket: Bucket::new(self.rate, now),
            });
            if entry.open >= self.max_per_ip {
                return Err(Refusal::PerIp);
            }
            if !entry.bucket.try_take(self.rate, now) {
                return Err(Refusal::Rate);
            }
            entry.open += 1;
        }
        *total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }

    /// Open connections right now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.state.lock().0
    }
}

/// The slot of a socket that [`crate::Server::serve`] accepted, shared by its requests: the one that upgrades
/// takes it for its WebSocket connection; otherwise it is released with the socket.
#[derive(Clone)]
pub(crate) struct Accepted(Arc<Mutex<Option<Slot>>>);

impl Accepted {
    pub(crate) fn new(slot: Slot) -> Self {
        Self(Arc::new(Mutex::new(Some(slot))))
    }

    /// The slot, once.
    pub(crate) fn take(&self) -> Option<Slot> {
        self.0.lock().take()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = self.limits.state.lock();
        let (total, per_ip) = &mut *guard;
        *total = total.saturating_sub(1);
        if let Some(state) = self.ip.and_then(|ip| per_ip.get_mut(&ip)) {
            state.open = state.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_bursts_then_the_sustained_rate() {
        let rate = Rate::new(10.0, 3.0);
        let t0 = Instant::now();
        let mut b = Bucket::new(rate, t0);
        assert!((0..3).all(|_| b.try_take(rate, t0)));
        assert!(!b.try_take(rate, t0));
        assert!(b.try_take(rate, t0 + Duration::from_millis(100)));
        assert!(!b.try_take(rate, t0 + Duration::from_millis(100)));
        let mut u = Bucket::new(Rate::UNLIMITED, t0);
        assert!((0..10_000).all(|_| u.try_take(Rate::UNLIMITED, t0)));
    }

    #[test]
    fn connection_slots_are_counted_per_ip_and_released() {
        let l = Arc::new(ConnectionLimits::new(3, 2, Rate::UNLIMITED));
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = l.acquire(Some(a), now).unwrap();
        let _s2 = l.acquire(Some(a), now).unwrap();
        assert_eq!(l.acquire(Some(a), now).err(), Some(Refusal::PerIp));
        let _s3 = l.acquire(Some(b), now).unwrap();
        assert_eq!(l.acquire(None, now).err(), Some(Refusal::Global));
        drop(s1);
        let _s4 = l.acquire(Some(a), now).unwrap();
        assert_eq!(l.open(), 3);
        drop(_s4);
        assert_eq!(l.open(), 2);
    }

    #[test]
    fn connection_rate_per_ip_is_enforced() {
        let l = Arc::new(ConnectionLimits::new(100, 100, Rate::new(1.0, 2.0)));
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let _a = l.acquire(Some(ip), now).unwrap();
        let _b = l.acquire(Some(ip), now).unwrap();
        assert_eq!(l.acquire(Some(ip), now).err(), Some(Refusal::Rate));
        assert!(l.acquire(Some(ip), now + Duration::from_secs(1)).is_ok());
    }
}

//! Presence: who is in a room (rooms matching `presence_rooms` only).
//!
//! `LocalPresence` is this server's part: the members of its presence rooms with their user and the time they
//! joined, kept by the registry under its write lock (so it always agrees with the routing table), and the
//! changes not yet carried out (events on the embedded bus, Redis writes on the Redis bus). It answers queries on
//! the embedded bus; on Redis the room's presence lives in Redis (`bus::redis::presence`) and this index is what
//! the instance re-registers after Redis lost it. Locks only: no I/O, nothing awaits under a lock.
//!
//! [`Presence`] is the answer to a query, the same for a client's `presence` event, `POST /api/presence` and
//! [`crate::Server::presence`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use tokio::sync::Notify;

use crate::protocol::{room, ClientId, RoomName, UserId};

/// One member of a presence room: a connection, its user, and when it joined the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMember {
    /// The client id (its connection).
    pub client: String,
    /// Its user, if the authenticator gave one.
    pub user: Option<String>,
    /// When this connection joined the room, by the clock of the instance it is connected to (millisecond
    /// precision).
    pub since: SystemTime,
}

/// Who is in a room: the answer to a presence query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The room.
    pub room: String,
    /// At most `presence_max_members` members, in no particular order.
    pub members: Vec<PresenceMember>,
    /// How many clients (connections) are in the room, on every instance: exact, even when `members` is cut.
    pub clients: usize,
    /// How many distinct users those clients belong to (clients without a user count for none).
    pub users: usize,
    /// `members` lists fewer than `clients`.
    pub truncated: bool,
}

/// Why a presence query could not be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The room name is not a joinable room's.
    #[error("invalid room name")]
    InvalidRoom,
    /// The room does not match `presence_rooms`.
    #[error("presence is not enabled for this room")]
    NotEnabled,
    /// The presence store could not answer (Redis unreachable).
    #[error("the presence store is unavailable; retry")]
    Unavailable,
}

/// The latest time a member's `since` shows, in milliseconds after the Unix epoch: 9999-12-31T23:59:59.999Z, the
/// last with a four-digit year. An entry read from Redis with a later one is malformed (`bus::redis::presence`).
pub(crate) const MAX_SINCE_MS: u64 = 253_402_300_799_999;
/// The earliest: 0000-01-01T00:00:00.000Z, as milliseconds before the Unix epoch.
const MIN_SINCE_MS_BEFORE_EPOCH: u64 = 62_167_219_200_000;

/// `since` as ISO 8601 (RFC 3339, UTC, milliseconds), clamped to the four-digit years (`time`'s conversion from
/// `SystemTime` panics past its range, which a corrupted Redis entry could reach; found by the `redis_presence`
/// fuzz target).
fn iso(t: SystemTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let ms: i64 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis().min(u128::from(MAX_SINCE_MS))).unwrap_or(0),
        Err(e) => -i64::try_from(e.duration().as_millis().min(u128::from(MIN_SINCE_MS_BEFORE_EPOCH))).unwrap_or(0),
    };
    time::OffsetDateTime::UNIX_EPOCH
        .checked_add(time::Duration::milliseconds(ms))
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

impl Serialize for PresenceMember {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("PresenceMember", 3)?;
        m.serialize_field("client", &self.client)?;
        m.serialize_field("user", &self.user)?;
        m.serialize_field("since", &iso(self.since))?;
        m.end()
    }
}

impl Serialize for Presence {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Presence", 5)?;
        m.serialize_field("room", &self.room)?;
        m.serialize_field("members", &self.members)?;
        m.serialize_field("clients", &self.clients)?;
        m.serialize_field("users", &self.users)?;
        m.serialize_field("truncated", &self.truncated)?;
        m.end()
    }
}

impl Presence {
    /// The answer's JSON object: `{"room","members":[{"client","user","since"}],"clients","users","truncated"}`
    /// (the `data` of the `presence` event and the body of `POST /api/presence`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis_of(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// The time `ms` milliseconds after the Unix epoch.
pub(crate) fn time_of(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A member as this instance keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    pub(crate) user: Option<UserId>,
    pub(crate) since_ms: u64,
}

#[derive(Default)]
struct RoomMembers {
    members: HashMap<ClientId, Local>,
    /// Sessions per user, for the exact `users` count.
    users: HashMap<UserId, usize>,
}

/// A join or leave of a presence room, waiting to be carried out.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) room: RoomName,
    pub(crate) client: ClientId,
    pub(crate) user: Option<UserId>,
    pub(crate) since_ms: u64,
    pub(crate) joined: bool,
}

/// Most changes waiting; past it they are dropped and [`Pending::overflowed`] is set (the Redis worker then
/// rebuilds this instance's entries from the index).
pub(crate) const MAX_PENDING: usize = 100_000;

/// Changes waiting for the presence worker.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) changes: Vec<Change>,
    pub(crate) overflowed: bool,
}

/// This server's presence rooms and members; see the module docs.
pub(crate) struct LocalPresence {
    patterns: Vec<String>,
    rooms: Mutex<HashMap<RoomName, RoomMembers>>,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl LocalPresence {
    pub(crate) fn new(patterns: Vec<String>) -> Self {
        Self {
            patterns,
            rooms: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        }
    }

    /// True when `room` keeps presence.
    pub(crate) fn is_presence_room(&self, room: &str) -> bool {
        !self.patterns.is_empty() && room::allowed(&self.patterns, room) && !room::is_client_id_shaped(room)
    }

    fn push(&self, change: Change) {
        {
            let mut p = self.pending.lock();
            if p.changes.len() >= MAX_PENDING {
                p.changes.clear();
                p.overflowed = true;
            }
            p.changes.push(change);
        }
        self.wake.notify_one();
    }

    /// A client entered a presence room (called by the registry, under its write lock).
    pub(crate) fn joined(&self, room: &RoomName, client: ClientId, user: Option<&UserId>) {
        let since_ms = millis_of(SystemTime::now());
        {
            let mut rooms = self.rooms.lock();
            let r = rooms.entry(room.clone()).or_default();
            let local = Local {
                user: user.cloned(),
                since_ms,
            };
            if r.members.insert(client, local).is_some() {
                return;
            }
            if let Some(u) = user {
                *r.users.entry(u.clone()).or_default() += 1;
            }
        }
        self.push(Change {
            room: room.clone(),
            client,
            user: user.cloned(),
            since_ms,
            joined: true,
        });
    }

    /// A client left a presence room (called by the registry, under its write lock).
    pub(crate) fn left(&self, room: &RoomName, client: &ClientId) {
        let gone = {
            let mut rooms = self.rooms.lock();
            let Some(r) = rooms.get_mut(room.as_str()) else {
                return;
            };
            let Some(gone) = r.members.remove(client) else {
                return;
            };
            if let Some(u) = &gone.user {
                if let Some(n) = r.users.get_mut(u) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        r.users.remove(u);
                    }
                }
            }
            if r.members.is_empty() {
                rooms.remove(room.as_str());
            }
            gone
        };
        self.push(Change {
            room: room.clone(),
            client: *client,
            user: gone.user,
            since_ms: gone.since_ms,
            joined: false,
        });
    }

    /// Takes the waiting changes, in the order they happened.
    pub(crate) fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock())
    }

    /// Resolves when changes may be waiting.
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Wakes the worker (e.g. to stop).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// How many of this instance's clients are in `room`.
    pub(crate) fn count(&self, room: &str) -> usize {
        self.rooms.lock().get(room).map_or(0, |r| r.members.len())
    }

    /// Every local member of every presence room (to re-register them).
    pub(crate) fn all(&self) -> Vec<(RoomName, ClientId, Local)> {
        let rooms = self.rooms.lock();
        rooms
            .iter()
            .flat_map(|(room, r)| r.members.iter().map(move |(c, l)| (room.clone(), *c, l.clone())))
            .collect()
    }

    /// The room's local members: at most `max` listed, exact counts.
    pub(crate) fn query(&self, room: &RoomName, max: usize) -> Presence {
        let rooms = self.rooms.lock();
        let (members, clients, users) = match rooms.get(room.as_str()) {
            Some(r) => (
                r.members
                    .iter()
                    .take(max)
                    .map(|(c, l)| PresenceMember {
                        client: c.to_string(),
                        user: l.user.as_ref().map(|u| u.as_str().to_owned()),
                        since: time_of(l.since_ms),
                    })
                    .collect::<Vec<_>>(),
                r.members.len(),
                r.users.len(),
            ),
            None => (Vec::new(), 0, 0),
        };
        Presence {
            room: room.as_str().to_owned(),
            truncated: members.len() < clients,
            members,
            clients,
            users,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    #[test]
    fn members_are_counted_by_client_and_by_user() {
        let p = LocalPresence::new(vec!["chat*".into()]);
        let (a, b, c) = (ClientId::random(), ClientId::random(), ClientId::random());
        let alice = UserId::parse("alice").unwrap();
        p.joined(&room("chat:1"), a, Some(&alice));
        p.joined(&room("chat:1"), b, Some(&alice));
        p.joined(&room("chat:1"), c, None);
        let q = p.query(&room("chat:1"), 2);
        assert_eq!((q.clients, q.users, q.members.len(), q.truncated), (3, 1, 2, true));
        p.left(&room("chat:1"), &a);
        p.left(&room("chat:1"), &b);
        let q = p.query(&room("chat:1"), 10);
        assert_eq!((q.clients, q.users, q.truncated), (1, 0, false));
        assert_eq!(q.members.first().map(|m| m.client.clone()), Some(c.to_string()));
        let changes = p.take().changes;
        assert_eq!(
            changes.iter().map(|c| c.joined).collect::<Vec<_>>(),
            [true, true, true, false, false]
        );
    }

    #[test]
    fn only_matching_rooms_keep_presence() {
        let p = LocalPresence::new(vec!["chat*".into()]);
        assert!(p.is_presence_room("chat:1"));
        assert!(!p.is_presence_room("news"));
        assert!(!LocalPresence::new(Vec::new()).is_presence_room("chat:1"));
    }

    #[test]
    fn the_answer_has_the_documented_shape() {
        let answer = Presence {
            room: "chat:1".into(),
            members: vec![PresenceMember {
                client: "c".into(),
                user: Some("alice".into()),
                since: time_of(1_700_000_000_123),
            }],
            clients: 3,
            users: 2,
            truncated: true,
        };
        assert_eq!(
            answer.to_json(),
            r#"{"room":"chat:1","members":[{"client":"c","user":"alice","since":"2023-11-14T22:13:20.123Z"}],"clients":3,"users":2,"truncated":true}"#
        );
    }

    #[test]
    fn since_outside_the_four_digit_years_is_clamped_not_a_panic() {
        let since = |t| iso(t);
        assert_eq!(since(time_of(MAX_SINCE_MS)), "9999-12-31T23:59:59.999Z");
        // `time` panicked converting these (a corrupted Redis entry's `since`; fuzz/regressions/redis_presence/).
        assert_eq!(since(time_of(MAX_SINCE_MS + 1)), "9999-12-31T23:59:59.999Z");
        assert_eq!(since(time_of(u64::MAX)), "9999-12-31T23:59:59.999Z");
        assert_eq!(since(UNIX_EPOCH - Duration::from_secs(1)), "1969-12-31T23:59:59.000Z");
        assert_eq!(
            since(UNIX_EPOCH - Duration::from_secs(1 << 40)),
            "0000-01-01T00:00:00.000Z"
        );
    }
}

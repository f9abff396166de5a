//! Who is connected to this instance: clients, their users and their rooms — the routing table of local
//! delivery.
//!
//! One `RwLock` guards all indexes so they always agree with each other. Fan-out only takes the read lock and
//! does nothing under it but non-blocking queue pushes, so deliveries run in parallel and never wait on a
//! socket. Membership changes take the write lock; they also tell the bus which channels this instance now
//! needs (interest), under the lock, so those notifications can never arrive out of order.

use std::borrow::Borrow;
use std::collections::{hash_map, HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::bus::Bus;
use crate::client_info::{ClientInfo, ClientState};
use crate::mailbox::Mailbox;
use crate::presence::LocalPresence;
use crate::protocol::outbound::TextFrame;
use crate::protocol::{room, ClientId, RoomName, Target, UserId};
use crate::roomkeys::RoomKeys;
use crate::telemetry::Telemetry;
use crate::wsenc::GROUP_RECORD_MIN_LEN;

pub(crate) struct Entry {
    pub(crate) id: ClientId,
    /// The id's canonical text, made once per connection: it is the name of the client's own-id room (that
    /// [`RoomName`] shares this allocation), the connection's core compares every room a client names against it,
    /// and logs, hooks and `connected` show it.
    pub(crate) id_str: Arc<str>,
    pub(crate) mailbox: Arc<Mailbox>,
    /// The group records the session takes (wsenc/1 §11): 0 none, 1 single (§11.3; room fan-outs of long
    /// messages prepare the room key's shared body for it), 2 batched too (§11.4; every room fan-out does). Set
    /// once, before the connection enters any room.
    room_keys: AtomicU8,
    connected_at: SystemTime,
    state: Mutex<EntryState>,
}

struct EntryState {
    phase: ClientState,
    user_id: Option<UserId>,
    metadata: Metadata,
    rooms: RoomSet,
    encrypted: bool,
}

/// The rooms a client is in, sorted by name: a few rooms per client is the norm, and a sorted vector holds them
/// in a third of a hash set's memory while still answering membership by binary search.
#[derive(Default)]
struct RoomSet(Vec<RoomName>);

impl RoomSet {
    fn find(&self, room: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|r| r.as_str().cmp(room))
    }

    fn contains(&self, room: &str) -> bool {
        self.find(room).is_ok()
    }

    /// False if the room was already in the set.
    fn insert(&mut self, room: RoomName) -> bool {
        match self.find(room.as_str()) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, room);
                true
            }
        }
    }

    fn take(&mut self, room: &str) -> Option<RoomName> {
        let at = self.find(room).ok()?;
        Some(self.0.remove(at))
    }
}

/// A connection's metadata (for JWTs, all the claims), kept as compact JSON text: a parsed `Value` tree costs
/// several times the text's size in every idle connection, and it is only read on rare paths (room validation,
/// client listings).
#[derive(Default)]
struct Metadata(Option<Box<str>>);

impl Metadata {
    fn new(value: &Value) -> Self {
        match value {
            Value::Null => Self(None),
            v => Self(serde_json::to_string(v).ok().map(String::into_boxed_str)),
        }
    }

    fn to_value(&self) -> Value {
        self.0
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null)
    }
}

impl Entry {
    pub(crate) fn new(id: ClientId, mailbox: Arc<Mailbox>) -> Arc<Self> {
        Arc::new(Self {
            id,
            id_str: id.to_string().into(),
            mailbox,
            room_keys: AtomicU8::new(0),
            connected_at: SystemTime::now(),
            state: Mutex::new(EntryState {
                phase: ClientState::Unauthorized,
                user_id: None,
                metadata: Metadata::default(),
                rooms: RoomSet::default(),
                encrypted: false,
            }),
        })
    }

    /// Marks the session as taking group records, batched ones too if `batches` (before
    /// [`Registry::authenticate`] puts it in rooms).
    pub(crate) fn set_room_keys(&self, batches: bool) {
        self.room_keys.store(if batches { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// True if this room fan-out should reach the session as room frames: it takes batched group records (any
    /// message may join a batch), or single ones and the fan-out has a message long enough for one.
    fn takes_room_frames(&self, long: bool) -> bool {
        match self.room_keys.load(Ordering::Relaxed) {
            0 => false,
            1 => long,
            _ => true,
        }
    }

    pub(crate) fn phase(&self) -> ClientState {
        self.state.lock().phase
    }

    pub(crate) fn user_id(&self) -> Option<UserId> {
        self.state.lock().user_id.clone()
    }

    /// The user, and whether the connection is an established session (and encrypted): what its end reports,
    /// without the cost of a full [`Self::info`] (rooms, metadata).
    pub(crate) fn session(&self) -> (Option<UserId>, Option<bool>) {
        let s = self.state.lock();
        (
            s.user_id.clone(),
            (s.phase == ClientState::Authenticated).then_some(s.encrypted),
        )
    }

    pub(crate) fn metadata(&self) -> Value {
        self.state.lock().metadata.to_value()
    }

    pub(crate) fn is_in(&self, room: &str) -> bool {
        self.state.lock().rooms.contains(room)
    }

    pub(crate) fn info(&self) -> ClientInfo {
        let s = self.state.lock();
        let rooms: Vec<String> = s.rooms.0.iter().map(|r| r.as_str().to_owned()).collect();
        ClientInfo {
            id: self.id_str.to_string(),
            user_id: s.user_id.as_ref().map(|u| u.as_str().to_owned()),
            state: s.phase,
            rooms,
            encrypted: s.encrypted,
            connected_at: self.connected_at,
            idle: self.mailbox.idle_for(),
            metadata: s.metadata.to_value(),
        }
    }

    /// The client's own-id room: named after its id, sharing [`Entry::id_str`].
    fn own_room(&self) -> Option<RoomName> {
        RoomName::from_shared(self.id_str.clone())
    }
}

/// Client ids a fan-out must skip.
///
/// Fan-out asks every member whether it is excluded, so the common lists (none, or the publisher alone) are
/// compared linearly, borrowed as they are, instead of SipHashing each member's id; only long lists pay for a
/// hash set.
pub(crate) enum Exclude<'a> {
    Few(&'a [ClientId]),
    Many(HashSet<ClientId>),
}

/// Longest exclude list compared linearly (16-byte compares beat one SipHash up to about here).
const LINEAR_EXCLUDE: usize = 8;

impl<'a> Exclude<'a> {
    pub(crate) fn none() -> Self {
        Self::Few(&[])
    }

    pub(crate) fn from_ids(ids: &'a [ClientId]) -> Self {
        if ids.len() > LINEAR_EXCLUDE {
            Self::Many(ids.iter().copied().collect())
        } else {
            Self::Few(ids)
        }
    }

    pub(crate) fn skips(&self, id: &ClientId) -> bool {
        match self {
            Self::Few(ids) => ids.iter().any(|x| x == id),
            Self::Many(set) => set.contains(id),
        }
    }
}

/// Result of adding a client to a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinResult {
    Joined,
    AlreadyMember,
    NotAuthenticated,
    RoomLimit,
    UnknownClient,
}

type Index = HashMap<ClientId, Arc<Entry>>;

/// The members of one room, or one user's sessions. Most users have one session and every client has a room of
/// its own, so a lone member is held inline: a hash table of its own would cost every idle connection two small
/// allocations.
enum Members {
    One(Arc<Entry>),
    Many(Box<Index>),
}

impl Members {
    fn add(&mut self, entry: &Arc<Entry>) {
        match self {
            Self::One(first) if first.id == entry.id => *first = entry.clone(),
            Self::One(first) => {
                let map = [(first.id, first.clone()), (entry.id, entry.clone())]
                    .into_iter()
                    .collect();
                *self = Self::Many(Box::new(map));
            }
            Self::Many(map) => {
                map.insert(entry.id, entry.clone());
            }
        }
    }

    /// Removes `id`; true if no one is left.
    fn remove(&mut self, id: &ClientId) -> bool {
        match self {
            Self::One(only) => only.id == *id,
            Self::Many(map) => {
                map.remove(id);
                if let (1, Some(last)) = (map.len(), map.values().next()) {
                    *self = Self::One(last.clone());
                    return false;
                }
                map.is_empty()
            }
        }
    }

    fn entries(&self) -> Vec<Arc<Entry>> {
        match self {
            Self::One(only) => vec![only.clone()],
            Self::Many(map) => map.values().cloned().collect(),
        }
    }

    fn deliver(&self, frames: &[TextFrame], exclude: &Exclude) -> usize {
        match self {
            Self::One(only) => usize::from(!exclude.skips(&only.id) && only.mailbox.push_frames(frames)),
            Self::Many(map) => deliver_each(map, frames, exclude),
        }
    }
}

/// Queues a room's `frames` for every member not in `exclude`: group-capable members get them as room frames
/// under the room's current key (prepared once, at the first such member), the others as they are. `long`: a
/// frame is long enough for a single group record (members that take only those get room frames only then).
fn deliver_room(
    index: &Index,
    room: &RoomName,
    keys: &RoomKeys,
    frames: &[TextFrame],
    exclude: &Exclude,
    long: bool,
) -> usize {
    let mut group: Option<Option<Vec<crate::session::RoomFrame>>> = None;
    index
        .iter()
        .filter(|(id, _)| !exclude.skips(id))
        .filter(|(_, e)| {
            if e.takes_room_frames(long) {
                if let Some(room_frames) = group.get_or_insert_with(|| keys.frames(room, frames)) {
                    return e.mailbox.push_room_frames(room_frames);
                }
            }
            e.mailbox.push_frames(frames)
        })
        .count()
}

/// Queues `frames` for every member of `index` not in `exclude`; how many were queued.
fn deliver_each(index: &Index, frames: &[TextFrame], exclude: &Exclude) -> usize {
    index
        .iter()
        .filter(|(id, _)| !exclude.skips(id))
        .filter(|(_, e)| e.mailbox.push_frames(frames))
        .count()
}

/// Adds `entry` to the group `key`; true if the group is new (the bus must start listening for it).
fn add_to<K: Hash + Eq>(groups: &mut HashMap<K, Members>, key: K, entry: &Arc<Entry>) -> bool {
    match groups.entry(key) {
        hash_map::Entry::Vacant(slot) => {
            slot.insert(Members::One(entry.clone()));
            true
        }
        hash_map::Entry::Occupied(mut slot) => {
            slot.get_mut().add(entry);
            false
        }
    }
}

/// Removes `id` from the group `key`; true if that emptied the group (gone now; the bus may stop listening).
fn remove_from<K, Q>(groups: &mut HashMap<K, Members>, key: &Q, id: &ClientId) -> bool
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ?Sized,
{
    let Some(members) = groups.get_mut(key) else {
        return false;
    };
    if !members.remove(id) {
        return false;
    }
    groups.remove(key);
    true
}

#[derive(Default)]
struct Indexes {
    clients: Index,
    authenticated: Index,
    users: HashMap<UserId, Members>,
    rooms: HashMap<RoomName, Members>,
}

pub(crate) struct Registry {
    idx: RwLock<Indexes>,
    bus: Arc<dyn Bus>,
    telemetry: Arc<Telemetry>,
    max_rooms_per_client: usize,
    /// Members of presence rooms, kept under the write lock with the room index.
    presence: Arc<LocalPresence>,
    room_keys: RoomKeys,
}

impl Registry {
    pub(crate) fn new(
        bus: Arc<dyn Bus>,
        telemetry: Arc<Telemetry>,
        max_rooms_per_client: usize,
        presence: Arc<LocalPresence>,
    ) -> Self {
        Self {
            idx: RwLock::new(Indexes::default()),
            bus,
            room_keys: RoomKeys::new(telemetry.clone()),
            telemetry,
            max_rooms_per_client,
            presence,
        }
    }

    /// A room appeared or emptied: the bus's interest, and the rooms gauge unless it is a client's own-id room
    /// (UUID-shaped names are reserved for those).
    fn room_changed(&self, room: RoomName, opened: bool) {
        if !room::is_client_id_shaped(room.as_str()) {
            self.telemetry.room(opened);
        }
        self.bus.interest(&Target::Room(room), opened);
    }

    /// A user's first session arrived or its last one left.
    fn user_changed(&self, user: UserId, arrived: bool) {
        self.telemetry.user(arrived);
        self.bus.interest(&Target::User(user), arrived);
    }

    /// Adds a new, unauthorised connection. False if the id is taken (the caller must refuse the socket).
    pub(crate) fn insert(&self, entry: Arc<Entry>) -> bool {
        let mut idx = self.idx.write();
        if idx.clients.contains_key(&entry.id) {
            return false;
        }
        idx.clients.insert(entry.id, entry);
        true
    }

    pub(crate) fn set_authenticating(&self, entry: &Entry) {
        entry.state.lock().phase = ClientState::Authenticating;
    }

    /// Makes the connection a full member: user index, own-id room, `rooms`, and the authenticated set.
    pub(crate) fn authenticate(
        &self,
        entry: &Arc<Entry>,
        user_id: Option<UserId>,
        metadata: Value,
        encrypted: bool,
        rooms: &[RoomName],
    ) {
        let mut idx = self.idx.write();
        if !idx.clients.contains_key(&entry.id) {
            return;
        }
        {
            let mut s = entry.state.lock();
            s.phase = ClientState::Authenticated;
            s.user_id = user_id.clone();
            s.metadata = Metadata::new(&metadata);
            s.encrypted = encrypted;
        }
        idx.authenticated.insert(entry.id, entry.clone());
        self.bus.interest(&Target::Client(entry.id), true);
        if let Some(user) = user_id {
            if add_to(&mut idx.users, user.clone(), entry) {
                self.user_changed(user, true);
            }
        }
        if let Some(own) = entry.own_room() {
            self.join_locked(&mut idx, entry, own);
        }
        for room in rooms {
            self.join_locked(&mut idx, entry, room.clone());
        }
    }

    /// Adds an authenticated client to a room.
    pub(crate) fn join(&self, id: &ClientId, room: RoomName) -> JoinResult {
        let mut idx = self.idx.write();
        let Some(entry) = idx.clients.get(id).cloned() else {
            return JoinResult::UnknownClient;
        };
        if entry.phase() != ClientState::Authenticated {
            return JoinResult::NotAuthenticated;
        }
        self.join_locked(&mut idx, &entry, room)
    }

    fn join_locked(&self, idx: &mut Indexes, entry: &Arc<Entry>, room: RoomName) -> JoinResult {
        {
            let mut s = entry.state.lock();
            if s.rooms.0.len() >= self.max_rooms_per_client && !s.rooms.contains(room.as_str()) {
                return JoinResult::RoomLimit;
            }
            if !s.rooms.insert(room.clone()) {
                return JoinResult::AlreadyMember;
            }
            if self.presence.is_presence_room(room.as_str()) {
                self.presence.joined(&room, entry.id, s.user_id.as_ref());
            }
        }
        // A joiner never receives a key made before it joined (wsenc/1 §11).
        self.room_keys.forget(room.as_str());
        if add_to(&mut idx.rooms, room.clone(), entry) {
            self.room_changed(room, true);
        }
        JoinResult::Joined
    }

    /// Removes a client from a room; false if it was not in it. Any text may be asked for: a name that is not
    /// a room's is simply not found.
    pub(crate) fn leave(&self, id: &ClientId, room: &str) -> bool {
        let mut idx = self.idx.write();
        let Some(entry) = idx.clients.get(id).cloned() else {
            return false;
        };
        let Some(room) = entry.state.lock().rooms.take(room) else {
            return false;
        };
        self.drop_member(&mut idx, id, room);
        true
    }

    fn drop_member(&self, idx: &mut Indexes, id: &ClientId, room: RoomName) {
        if self.presence.is_presence_room(room.as_str()) {
            self.presence.left(&room, id);
        }
        // A former member never receives a key made after it left (wsenc/1 §11).
        self.room_keys.forget(room.as_str());
        if remove_from(&mut idx.rooms, &room, id) {
            self.room_changed(room, false);
        }
    }

    /// Removes a connection from every index.
    pub(crate) fn remove(&self, entry: &Entry) {
        let mut idx = self.idx.write();
        if idx.clients.remove(&entry.id).is_none() {
            return;
        }
        let was_member = idx.authenticated.remove(&entry.id).is_some();
        let (user, rooms) = {
            let mut s = entry.state.lock();
            (s.user_id.clone(), std::mem::take(&mut s.rooms))
        };
        for room in rooms.0 {
            self.drop_member(&mut idx, &entry.id, room);
        }
        if let Some(user) = user {
            if remove_from(&mut idx.users, &user, &entry.id) {
                self.user_changed(user, false);
            }
        }
        if was_member {
            self.bus.interest(&Target::Client(entry.id), false);
        }
    }

    pub(crate) fn get(&self, id: &ClientId) -> Option<Arc<Entry>> {
        self.idx.read().clients.get(id).cloned()
    }

    pub(crate) fn has_room(&self, room: &str) -> bool {
        self.idx.read().rooms.contains_key(room)
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        self.idx.read().clients.values().cloned().collect()
    }

    pub(crate) fn by_user(&self, user: &str) -> Vec<Arc<Entry>> {
        self.idx
            .read()
            .users
            .get(user)
            .map(Members::entries)
            .unwrap_or_default()
    }

    pub(crate) fn by_room(&self, room: &str) -> Vec<Arc<Entry>> {
        self.idx
            .read()
            .rooms
            .get(room)
            .map(Members::entries)
            .unwrap_or_default()
    }

    /// Queues `text` for every local recipient of `target` not in `exclude`; returns how many were queued.
    /// Only authenticated clients are ever recipients (the indexes hold no one else).
    pub(crate) fn deliver(&self, target: &Target, text: &TextFrame, exclude: &Exclude) -> usize {
        self.deliver_all(target, std::slice::from_ref(text), exclude)
    }

    /// [`Self::deliver`] for several frames in order: each recipient's queue is visited once for all of them,
    /// which is what keeps a burst to a large room fast (its members' queues are cold in the cache).
    pub(crate) fn deliver_all(&self, target: &Target, frames: &[TextFrame], exclude: &Exclude) -> usize {
        let idx = self.idx.read();
        let members = match target {
            Target::Broadcast => return deliver_each(&idx.authenticated, frames, exclude),
            Target::Client(id) => {
                let entry = idx.authenticated.get(id);
                return usize::from(entry.is_some_and(|e| e.mailbox.push_frames(frames)));
            }
            Target::Room(room) => {
                return match idx.rooms.get(room) {
                    // Group records pay off only with several recipients; single ones (§11.3) only for messages that
                    // are not short, batched ones (§11.4) for any.
                    Some(Members::Many(map)) => {
                        let long = frames.iter().any(|f| f.text().len() >= GROUP_RECORD_MIN_LEN);
                        deliver_room(map, room, &self.room_keys, frames, exclude, long)
                    }
                    Some(one) => one.deliver(frames, exclude),
                    None => 0,
                };
            }
            Target::User(user) => idx.users.get(user),
        };
        members.map_or(0, |m| m.deliver(frames, exclude))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;

    #[test]
    fn metadata_is_kept_as_text_and_read_back_unchanged() {
        let claims =
            serde_json::json!({"sub": "u1", "n": 18446744073709551615u64, "f": 0.1, "nested": {"a": [1, null, "x"]}});
        let m = Metadata::new(&claims);
        assert!(m.0.is_some());
        assert_eq!(m.to_value(), claims);
        let empty = Metadata::new(&Value::Null);
        assert!(empty.0.is_none());
        assert_eq!(empty.to_value(), Value::Null);
    }

    fn entry() -> Arc<Entry> {
        let (mailbox, _rx) = Mailbox::new(8, 1 << 20, std::time::Instant::now(), Arc::new(Telemetry::new()));
        Entry::new(ClientId::random(), mailbox)
    }

    fn ids(members: &Members) -> HashSet<ClientId> {
        members.entries().iter().map(|e| e.id).collect()
    }

    #[test]
    fn a_group_holds_one_member_inline_and_many_in_a_table() {
        let (a, b, c) = (entry(), entry(), entry());
        let mut m = Members::One(a.clone());
        m.add(&a);
        assert!(matches!(m, Members::One(_)), "re-adding the member keeps it inline");
        m.add(&b);
        m.add(&c);
        assert!(matches!(&m, Members::Many(map) if map.len() == 3));
        assert_eq!(ids(&m), HashSet::from([a.id, b.id, c.id]));
        assert!(!m.remove(&a.id));
        assert!(!m.remove(&ClientId::random()), "removing a stranger changes nothing");
        assert!(!m.remove(&b.id));
        assert!(
            matches!(&m, Members::One(last) if last.id == c.id),
            "back to one: inline again"
        );
        assert!(!m.remove(&a.id));
        assert!(m.remove(&c.id), "the last member leaves: the group is empty");
    }

    #[test]
    fn groups_report_when_they_appear_and_when_they_empty() {
        let (a, b) = (entry(), entry());
        let mut groups: HashMap<&str, Members> = HashMap::new();
        assert!(add_to(&mut groups, "r", &a));
        assert!(!add_to(&mut groups, "r", &b));
        assert!(!remove_from(&mut groups, "r", &a.id));
        assert!(!remove_from(&mut groups, "other", &b.id));
        assert!(remove_from(&mut groups, "r", &b.id));
        assert!(groups.is_empty());
    }

    #[test]
    fn a_room_set_answers_membership_and_lists_rooms_sorted() {
        let mut set = RoomSet::default();
        for name in ["b", "a", "c", "a"] {
            set.insert(RoomName::parse(name).unwrap());
        }
        let names: Vec<&str> = set.0.iter().map(RoomName::as_str).collect();
        assert_eq!(names, ["a", "b", "c"], "sorted, each room once");
        assert!(set.contains("b") && !set.contains("d"));
        assert_eq!(set.take("b").map(|r| r.as_str().to_owned()).as_deref(), Some("b"));
        assert!(set.take("b").is_none());
        assert!(!set.contains("b"));
    }

    #[test]
    fn exclude_matches_listed_ids_short_and_long() {
        let ids: Vec<ClientId> = (0..20).map(|_| ClientId::random()).collect();
        let other = ClientId::random();
        for n in [0, 1, 2, LINEAR_EXCLUDE, LINEAR_EXCLUDE + 1, 20] {
            let list = ids.get(..n).unwrap();
            let ex = Exclude::from_ids(list);
            assert_eq!(matches!(ex, Exclude::Many(_)), n > LINEAR_EXCLUDE);
            for id in list {
                assert!(ex.skips(id));
            }
            assert!(!ex.skips(&other));
        }
        assert!(!Exclude::none().skips(&other));
    }
}

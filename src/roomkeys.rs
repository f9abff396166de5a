//! The room keys of group records (wsenc/1 §11) on this instance: the current key of every room that has sent a
//! group record since its membership last changed.
//!
//! A key is made on a room's first message to group-capable members and forgotten whenever a member joins,
//! leaves, is removed or disconnects (the registry calls [`RoomKeys::forget`] under its write lock), so the next
//! message seals under a fresh key with a new epoch: a former member never receives a key made after it left, a
//! joiner never one made before it joined. Keys never leave this instance (not on the bus, not in history).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::crypto::backend::random_bytes;
use crate::crypto::group::{MAX_BODIES_PER_KEY, ROOM_KEY_LEN};
use crate::crypto::RoomKey;
use crate::protocol::outbound::TextFrame;
use crate::protocol::RoomName;
use crate::session::RoomFrame;
use crate::telemetry::Telemetry;

/// A room's current key and the next body counter under it.
struct Current {
    key: Arc<RoomKey>,
    next: u64,
}

/// Every room's current key; see the module documentation.
#[derive(Default)]
pub(crate) struct RoomKeys {
    inner: Mutex<State>,
    /// Counts the keys made (`sealcast_room_key_rotations_total`).
    telemetry: Option<Arc<Telemetry>>,
}

#[derive(Default)]
struct State {
    keys: HashMap<RoomName, Current>,
    /// The last epoch issued on this instance: epochs are unique across rooms and never reused.
    epoch: u64,
}

impl RoomKeys {
    /// No keys yet; every key made is counted in `telemetry`.
    pub(crate) fn new(telemetry: Arc<Telemetry>) -> Self {
        Self {
            inner: Mutex::default(),
            telemetry: Some(telemetry),
        }
    }

    /// `frames` as room frames under `room`'s current key (made now if there is none, or if the current one has
    /// sealed its last body), each with its own counter. `None` if no key could be made (no OS randomness): the
    /// caller then delivers per-recipient records.
    pub(crate) fn frames(&self, room: &RoomName, frames: &[TextFrame]) -> Option<Vec<RoomFrame>> {
        let n = u64::try_from(frames.len()).ok()?;
        let mut state = self.inner.lock();
        let fresh = state
            .keys
            .get(room)
            .is_none_or(|c| c.next.saturating_add(n) > MAX_BODIES_PER_KEY);
        if fresh {
            let epoch = state.epoch.checked_add(1)?;
            let mut bytes = Zeroizing::new([0u8; ROOM_KEY_LEN]);
            random_bytes(&mut *bytes).ok()?;
            let key = RoomKey::new(room.as_shared(), epoch, bytes).ok()?;
            state.epoch = epoch;
            if let Some(telemetry) = &self.telemetry {
                telemetry.room_key_rotation();
            }
            state.keys.insert(
                room.clone(),
                Current {
                    key: Arc::new(key),
                    next: 0,
                },
            );
        }
        let current = state.keys.get_mut(room)?;
        let first = current.next;
        current.next = first.checked_add(n)?;
        Some(
            frames
                .iter()
                .zip(first..)
                .map(|(frame, counter)| RoomFrame::new(frame.clone(), current.key.clone(), counter))
                .collect(),
        )
    }

    /// Forgets `room`'s key: its next message is sealed under a new one.
    pub(crate) fn forget(&self, room: &str) {
        let mut state = self.inner.lock();
        if !state.keys.is_empty() {
            state.keys.remove(room);
        }
    }

    /// Rooms holding a key now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn epoch_of(keys: &RoomKeys, name: &str) -> u64 {
        let frames = keys
            .frames(&room(name), &[TextFrame::new(r#"{"event":"m","data":1}"#)])
            .unwrap();
        let message = crate::session::RoomMessage::new(&frames[0]);
        message.group(None).unwrap().0.epoch()
    }

    #[test]
    fn a_room_keeps_its_key_until_its_membership_changes() {
        let keys = RoomKeys::default();
        let first = epoch_of(&keys, "r");
        assert_eq!(epoch_of(&keys, "r"), first, "same key while nobody joins or leaves");
        keys.forget("r");
        let second = epoch_of(&keys, "r");
        assert!(second > first, "a forgotten key is replaced by one with a new epoch");
        assert_ne!(epoch_of(&keys, "other"), second, "epochs are unique across rooms");
        assert_eq!(keys.len(), 2);
    }
}

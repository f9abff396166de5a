//! A place in a room's history stream, as `joined`, `ack`, history messages and bus envelopes carry it.

/// A message's offset in a room's history stream and the stream's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct StreamPosition {
    /// The offset: 1 for the room's first message, one more for each after it.
    pub offset: u64,
    /// The epoch: changes whenever the stream had to be recreated; offsets of two epochs are unrelated.
    pub epoch: String,
}

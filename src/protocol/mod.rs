//! Pure wire code: event names, close codes, client frame parsing, outbound frame encoding, typed identifiers,
//! room-name rules and the bus envelope. Nothing here does I/O, so every function can be fuzzed and
//! property-tested on its own.

pub mod close;
pub mod envelope;
pub mod event;
pub mod frame;
pub mod id;
pub mod inbound;
pub mod json;
pub mod outbound;
pub mod position;
pub mod room;

pub use close::CloseCode;
pub use envelope::{Action, Envelope, EnvelopeError, Target};
pub use id::{ClientId, RoomName, UserId};
pub use inbound::{ClientMessage, InboundError};
pub use outbound::Message;
pub use position::StreamPosition;

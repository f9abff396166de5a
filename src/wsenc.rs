//! wsenc/1 wired into the server: the bundled [`Handshake`](crate::session::Handshake) and the
//! [`Sealer`]/[`Opener`] implementations of the record layer.
//!
//! The protocol itself (key schedule, records, strict parsing) is the pure [`crate::crypto`] module; this file
//! only adapts it to the connection's seam.

use std::num::NonZeroUsize;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::crypto::{self, RecordOpener, RecordSealer, StaticKeySet};
use crate::hooks::{Hook, HookFuture};
use crate::protocol::CloseCode;
use crate::session::{Frames, HandshakeOutcome, HandshakeRequest, Opener, RoomMessage, Sealer, Session};
use crate::telemetry::Telemetry;

/// The server's static key set, replaceable at runtime ([`crate::Server::reload_static_keys`]). Clones share
/// it; a handshake takes the current set once, so a reload never changes a handshake already running.
#[derive(Clone)]
pub(crate) struct SharedKeys(Arc<RwLock<Arc<StaticKeySet>>>);

impl SharedKeys {
    pub(crate) fn new(keys: Arc<StaticKeySet>) -> Self {
        Self(Arc::new(RwLock::new(keys)))
    }

    /// The current set (a cheap `Arc` clone under a read lock).
    pub(crate) fn current(&self) -> Arc<StaticKeySet> {
        self.0.read().clone()
    }

    pub(crate) fn replace(&self, keys: Arc<StaticKeySet>) {
        *self.0.write() = keys;
    }
}

/// The bundled wsenc/1 handshake. Installed by [`crate::ServerBuilder::static_keys`].
#[derive(Clone)]
pub struct WsEnc1 {
    keys: SharedKeys,
    max_records_per_epoch: u64,
    padding: Option<NonZeroUsize>,
    room_keys: bool,
    telemetry: Option<Arc<Telemetry>>,
}

/// Room messages shorter than this (their JSON text, in bytes) go to group-capable sessions as per-recipient
/// records too: below about 1 KiB sealing a small header per recipient costs as much as sealing the whole message
/// (measured: BENCHMARKS.md, group records), and the header makes the frame longer.
pub const GROUP_RECORD_MIN_LEN: usize = 1024;

/// The `authenticate` and `connected` field that negotiates group records (wsenc/1 §11).
pub const ROOM_KEYS_FIELD: &str = "roomKeys";

/// The `roomKeys` value of batched group records (wsenc/1 §11.4; it implies the single ones, value 1).
pub const ROOM_KEYS_BATCHED: u64 = 2;

/// The `roomKeys` value of binary batched group records (wsenc/1 §11.5; it implies values 2 and 1).
pub const ROOM_KEYS_BINARY: u64 = 3;

/// True if the `authenticate` payload advertises group records: `"roomKeys": 1`, `2` (batched ones too) or `3`
/// (binary batches too). Any other value (a later version, a string, `true`) is not this extension and is ignored.
pub fn advertises_room_keys(data: &Map<String, Value>) -> bool {
    matches!(
        data.get(ROOM_KEYS_FIELD).and_then(Value::as_u64),
        Some(1 | ROOM_KEYS_BATCHED | ROOM_KEYS_BINARY)
    )
}

/// True if the `authenticate` payload advertises batched group records (wsenc/1 §11.4): `"roomKeys": 2` or `3`.
pub fn advertises_room_key_batches(data: &Map<String, Value>) -> bool {
    matches!(
        data.get(ROOM_KEYS_FIELD).and_then(Value::as_u64),
        Some(ROOM_KEYS_BATCHED | ROOM_KEYS_BINARY)
    )
}

/// True if the `authenticate` payload advertises binary batched group records (wsenc/1 §11.5): `"roomKeys": 3`.
pub fn advertises_room_key_binary(data: &Map<String, Value>) -> bool {
    data.get(ROOM_KEYS_FIELD).and_then(Value::as_u64) == Some(ROOM_KEYS_BINARY)
}

impl std::fmt::Debug for WsEnc1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEnc1")
            .field("keys", &self.keys.current().iter().count())
            .field("max_records_per_epoch", &self.max_records_per_epoch)
            .finish_non_exhaustive()
    }
}

impl WsEnc1 {
    /// A handshake answering with `keys` (the current key unless the client names another `kid`).
    pub fn new(keys: Arc<StaticKeySet>) -> Self {
        Self::with_shared_keys(SharedKeys::new(keys))
    }

    /// A handshake that follows the server's replaceable key set.
    pub(crate) fn with_shared_keys(keys: SharedKeys) -> Self {
        Self {
            keys,
            max_records_per_epoch: crypto::MAX_RECORDS_PER_EPOCH,
            padding: None,
            room_keys: true,
            telemetry: None,
        }
    }

    /// Whether clients that advertise group records (wsenc/1 §11) get them (default: true). Off, every room
    /// message is sealed per recipient and `connected` never carries `roomKeys`.
    pub fn room_keys(mut self, enabled: bool) -> Self {
        self.room_keys = enabled;
        self
    }

    /// Records per direction and epoch before a key update (default and maximum 2^20; lower it for tests).
    pub fn max_records_per_epoch(mut self, limit: u64) -> Self {
        self.max_records_per_epoch = limit;
        self
    }

    /// Pads every outbound plaintext up to a multiple of `bucket` bytes (default: no padding).
    pub fn padding(mut self, bucket: Option<NonZeroUsize>) -> Self {
        self.padding = bucket;
        self
    }

    pub(crate) fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// The keys this handshake serves now (a server's reload replaces them for later handshakes).
    pub fn keys(&self) -> Arc<StaticKeySet> {
        self.keys.current()
    }

    /// Runs the server side of the handshake on an `authenticate` payload.
    pub fn establish(&self, client_id: &str, user_id: Option<&str>, data: Map<String, Value>) -> HandshakeOutcome {
        let room_keys = self.room_keys && advertises_room_keys(&data);
        let batches = room_keys && advertises_room_key_batches(&data);
        let binary = batches && advertises_room_key_binary(&data);
        let request = match crypto::HandshakeRequest::from_auth_data(&Value::Object(data)) {
            Ok(Some(request)) => request,
            Ok(None) => return HandshakeOutcome::Plaintext,
            Err(_) => return HandshakeOutcome::Reject,
        };
        if let Some(telemetry) = &self.telemetry {
            telemetry.wsenc_handshake();
        }
        let Ok((hello, mut sealer, mut opener)) =
            crypto::server_handshake(&self.keys.current(), &request, client_id, user_id.unwrap_or(""))
        else {
            return HandshakeOutcome::Reject;
        };
        if sealer.set_epoch_limit(self.max_records_per_epoch).is_err()
            || opener.set_epoch_limit(self.max_records_per_epoch).is_err()
        {
            return HandshakeOutcome::Reject;
        }
        sealer.set_padding(self.padding);
        let mut connected_fields = Map::new();
        hello.insert_into(&mut connected_fields);
        if binary {
            sealer.enable_room_key_binary();
            connected_fields.insert(ROOM_KEYS_FIELD.into(), Value::from(ROOM_KEYS_BINARY));
        } else if batches {
            sealer.enable_room_key_batches();
            connected_fields.insert(ROOM_KEYS_FIELD.into(), Value::from(ROOM_KEYS_BATCHED));
        } else if room_keys {
            sealer.enable_room_keys();
            connected_fields.insert(ROOM_KEYS_FIELD.into(), Value::from(1));
        }
        HandshakeOutcome::Encrypted(Session {
            connected_fields,
            sealer: Box::new(sealer),
            opener: Box::new(opener),
        })
    }
}

impl Hook<HandshakeRequest, HandshakeOutcome> for WsEnc1 {
    fn call(&self, req: HandshakeRequest) -> HookFuture<HandshakeOutcome> {
        let outcome = self.establish(&req.client_id, req.user_id.as_deref(), req.data);
        Box::pin(std::future::ready(Ok(outcome)))
    }
}

fn close_code(code: u16) -> CloseCode {
    CloseCode::from_code(code).unwrap_or(CloseCode::DecryptionFailed)
}

impl Sealer for RecordSealer {
    fn seal(&mut self, inner: &str, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        self.seal_to(inner.as_bytes(), out)
            .map_err(|e| close_code(e.close_code()))
    }

    fn rekey(&mut self, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        self.key_update_to(out).map_err(|e| close_code(e.close_code()))
    }

    fn idle(&mut self) {
        self.release_idle_memory();
    }

    fn seal_room(&mut self, message: &RoomMessage<'_>, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        if self.room_keys_enabled() && message.text().len() >= GROUP_RECORD_MIN_LEN {
            if let Some((key, body)) = message.group(self.padding()) {
                return self
                    .seal_group_to(key, body, out)
                    .map_err(|e| close_code(e.close_code()));
            }
        }
        Sealer::seal(self, message.text(), out)
    }

    fn room_keys(&self) -> bool {
        self.room_keys_enabled()
    }

    fn room_batch_limit(&self) -> usize {
        if self.room_key_batches_enabled() {
            crypto::group::MAX_BATCH_BODIES
        } else {
            0
        }
    }

    fn seal_rooms(&mut self, messages: &[RoomMessage<'_>], out: &mut Frames<'_>) -> Result<(), CloseCode> {
        if !self.room_key_batches_enabled() {
            for message in messages {
                self.seal_room(message, out)?;
            }
            return Ok(());
        }
        let pad = self.padding();
        let mut items = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            // Any length: under one header per run a message's own share is 40 bytes of header plaintext, so
            // batched records pay off at 256 B already (BENCHMARKS.md, batched group records); a room message
            // that leaves alone still follows GROUP_RECORD_MIN_LEN (`seal_room`).
            match message.group(pad) {
                Some(item) => items.push(item),
                // A message that cannot join the batch ends it and goes per recipient, in order.
                None => {
                    self.seal_batch(&items, out)?;
                    items.clear();
                    Sealer::seal(self, message.text(), out)?;
                    out.set_element_base(i + 1);
                }
            }
        }
        self.seal_batch(&items, out)
    }
}

impl RecordSealer {
    /// One batched group record for `items`, if there are any.
    fn seal_batch(
        &mut self,
        items: &[(&crypto::RoomKey, &crypto::SealedBody)],
        out: &mut Frames<'_>,
    ) -> Result<(), CloseCode> {
        if items.is_empty() {
            return Ok(());
        }
        self.seal_group_batch_to(items, out)
            .map_err(|e| close_code(e.close_code()))
    }
}

impl Opener for RecordOpener {
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode> {
        RecordOpener::open(self, frame).map_err(|e| close_code(e.close_code()))
    }

    fn idle(&mut self) {
        self.release_idle_memory();
    }
}

/// The body of `GET /.well-known/sealcast.json`: the protocol and every static public key with its `kid`.
pub fn well_known(keys: &StaticKeySet) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| serde_json::json!({ "kid": k.kid_b64u(), "publicKey": k.public_key_b64u() }))
        .collect();
    serde_json::json!({ "protocol": "wsenc/1", "keys": keys })
}

//! The reference framework's encryption suite as a pluggable handshake, for existing Ignis browser clients.
//! See [`crate::crypto::ignis`] for the suite and why it is weaker than wsenc/1; it is never the default.

use serde_json::{Map, Value};

use crate::crypto::ignis::{self, IgnisError, IgnisKey};
use crate::hooks::{Hook, HookFuture};
use crate::protocol::CloseCode;
use crate::session::{Frames, HandshakeOutcome, HandshakeRequest, Opener, Sealer, Session};

/// The Ignis-compatible handshake: `authenticate` carries `publicKey` (standard base64 of the 65-byte point);
/// `connected` answers with `serverPublicKey` and `salt` (standard base64); every later frame in both
/// directions is `{"event":"encrypted","data":{"iv","ct"}}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnisCompat;

struct IgnisSealer(IgnisKey);
struct IgnisOpener(IgnisKey);

impl Sealer for IgnisSealer {
    fn seal(&mut self, inner: &str, out: &mut Frames<'_>) -> Result<(), CloseCode> {
        let frame = self.0.seal(inner.as_bytes()).map_err(|_| CloseCode::InternalError)?;
        out.push(&frame);
        Ok(())
    }
}

impl Opener for IgnisOpener {
    fn open(&mut self, frame: &[u8]) -> Result<Option<Vec<u8>>, CloseCode> {
        match self.0.open(frame) {
            Ok(inner) => Ok(Some(inner)),
            Err(IgnisError::NotEncrypted) => Err(CloseCode::EncryptionRequired),
            Err(_) => Err(CloseCode::DecryptionFailed),
        }
    }
}

impl Hook<HandshakeRequest, HandshakeOutcome> for IgnisCompat {
    fn call(&self, req: HandshakeRequest) -> HookFuture<HandshakeOutcome> {
        let outcome = match req.data.get("publicKey") {
            None => HandshakeOutcome::Plaintext,
            Some(Value::String(pk)) => match ignis::server_handshake(pk) {
                Ok(hello) => {
                    let mut connected_fields = Map::new();
                    connected_fields.insert("serverPublicKey".into(), Value::String(hello.server_public_key));
                    connected_fields.insert("salt".into(), Value::String(hello.salt));
                    HandshakeOutcome::Encrypted(Session {
                        connected_fields,
                        sealer: Box::new(IgnisSealer(hello.key.clone())),
                        opener: Box::new(IgnisOpener(hello.key)),
                    })
                }
                Err(_) => HandshakeOutcome::Reject,
            },
            Some(_) => HandshakeOutcome::Reject,
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }
}

//! Optional bus authentication (see docs/differences-from-ignis.md, "Bus envelopes can be signed and are
//! validated like client input"): with a shared secret every envelope carries
//! `"sig"`, an HMAC-SHA256 tag (base64url, no padding) over a canonical form, and envelopes without a valid tag
//! are refused.
//!
//! Canonical form: the ASCII tag `sealcast-bus-v1`, then each of these fields as a 4-byte big-endian length
//! followed by its UTF-8 bytes — the channel it is published on, `serverId`, `type`, `target` (empty when
//! absent), `event`, and the raw JSON text of `data` exactly as it appears in the envelope (`null` when absent) —
//! then the number of `exclude` entries (4 bytes big-endian) and each entry length-prefixed the same way.
//! Binding the channel stops a captured envelope from being replayed onto another channel; a captured envelope
//! can still be replayed on its own channel (pub/sub has no nonce), which the docs state.

use std::borrow::Cow;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::protocol::{ClientId, Envelope};

type HmacSha256 = Hmac<Sha256>;

/// The JSON field carrying the tag.
pub const SIG_FIELD: &str = "sig";

/// The bus's wire format, both ways: an envelope out as its JSON (signed when the fleet shares a secret), and
/// the signature check of what comes in. The one encoder of [`super::RedisBus`] and [`crate::Emitter`].
#[derive(Clone, Default, Debug)]
pub(crate) struct Codec {
    signer: Option<Signer>,
}

impl Codec {
    /// Signs and checks with `secret`, or neither without one. An empty secret is refused.
    pub(crate) fn new(secret: Option<&[u8]>) -> Result<Self, super::RedisBusError> {
        let signer = match secret {
            Some(s) => Some(Signer::new(s).ok_or(super::RedisBusError::EmptySecret)?),
            None => None,
        };
        Ok(Self { signer })
    }

    /// Whether envelopes are signed (and unsigned ones refused).
    pub(crate) fn is_signed(&self) -> bool {
        self.signer.is_some()
    }

    /// What goes on the wire for `envelope`.
    pub(crate) fn encode(&self, envelope: &Envelope) -> String {
        match &self.signer {
            Some(s) => s.sign(envelope),
            None => envelope.to_json(),
        }
    }

    /// Whether a payload received on `channel` may be parsed: always without a secret, else only when its
    /// signature checks out.
    pub(crate) fn accepts(&self, channel: &str, payload: &[u8]) -> bool {
        self.signer.as_ref().is_none_or(|s| s.verify(channel, payload))
    }
}

/// Signs and verifies envelopes with a shared secret.
#[derive(Clone)]
struct Signer {
    /// Keyed once; cloned per envelope.
    keyed: HmacSha256,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

struct Fields<'a> {
    server_id: &'a str,
    kind: &'a str,
    target: &'a str,
    event: &'a str,
    data: &'a str,
    exclude: ExcludeText<'a>,
}

/// The `exclude` entries as the signature covers them: their wire text.
#[derive(Clone, Copy)]
enum ExcludeText<'a> {
    /// As received (verifying): exactly the strings in the payload, ids or not.
    Raw(&'a [String]),
    /// As sent (signing): each id's canonical text, which is what `Envelope::to_json` writes.
    Ids(&'a [ClientId]),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct View<'a> {
    #[serde(borrow)]
    server_id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    target: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    exclude: Option<Vec<String>>,
    #[serde(default, borrow)]
    sig: Option<Cow<'a, str>>,
}

impl Signer {
    /// `None` for an empty secret (HMAC itself accepts keys of any length).
    fn new(secret: &[u8]) -> Option<Self> {
        if secret.is_empty() {
            return None;
        }
        let secret = Zeroizing::new(secret.to_vec());
        let keyed = HmacSha256::new_from_slice(&secret).ok()?;
        Some(Self { keyed })
    }

    fn mac(&self, channel: &str, f: &Fields<'_>) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(b"sealcast-bus-v1");
        let mut field = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u32).to_be_bytes());
            mac.update(bytes);
        };
        for part in [channel, f.server_id, f.kind, f.target, f.event, f.data] {
            field(part.as_bytes());
        }
        let count = match f.exclude {
            ExcludeText::Raw(list) => list.len(),
            ExcludeText::Ids(list) => list.len(),
        };
        mac.update(&(count as u32).to_be_bytes());
        let mut entry = |bytes: &[u8]| {
            mac.update(&(bytes.len() as u32).to_be_bytes());
            mac.update(bytes);
        };
        match f.exclude {
            ExcludeText::Raw(list) => list.iter().for_each(|id| entry(id.as_bytes())),
            ExcludeText::Ids(list) => {
                for id in list {
                    entry(id.encode(&mut [0; ClientId::TEXT_LEN]).as_bytes());
                }
            }
        }
        mac
    }

    /// The envelope's JSON with a `sig` field.
    fn sign(&self, envelope: &Envelope) -> String {
        let json = envelope.to_json();
        let channel = envelope.target.channel();
        let (kind, target) = envelope.wire_kind_target();
        let fields = Fields {
            server_id: &envelope.server_id,
            kind,
            target: target.as_deref().unwrap_or(""),
            event: &envelope.event,
            data: envelope.data.get(),
            exclude: ExcludeText::Ids(&envelope.exclude),
        };
        let tag = self.mac(&channel, &fields).finalize().into_bytes();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
        // `to_json` always yields an object: splice the tag in before its closing brace.
        match json.strip_suffix('}') {
            Some(head) => format!("{head},\"{SIG_FIELD}\":\"{tag}\"}}"),
            None => json,
        }
    }

    /// Whether `payload`, received on `channel`, carries a valid tag (constant-time comparison).
    fn verify(&self, channel: &str, payload: &[u8]) -> bool {
        let Ok(view) = serde_json::from_slice::<View<'_>>(payload) else {
            return false;
        };
        let Some(tag) = view
            .sig
            .as_deref()
            .and_then(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok())
        else {
            return false;
        };
        let exclude = view.exclude.unwrap_or_default();
        let fields = Fields {
            server_id: &view.server_id,
            kind: &view.kind,
            target: view.target.as_deref().unwrap_or(""),
            event: &view.event,
            data: view.data.map_or("null", RawValue::get),
            exclude: ExcludeText::Raw(&exclude),
        };
        self.mac(channel, &fields).verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{RoomName, Target, UserId};

    const X: &str = "0b6d9c2e-8f0a-4c59-9a57-3f2f1f7d3c11";
    const Y: &str = "7c1e3a52-0d4b-4f8e-b1a2-9e6f5d4c3b2a";

    fn env(target: Target) -> Envelope {
        Envelope {
            server_id: "s1".into(),
            target,
            event: "e".into(),
            data: RawValue::from_string("{\"k\": [1, 2]}".into()).unwrap(),
            exclude: vec![ClientId::parse(X).unwrap()],
            action: crate::protocol::envelope::Action::Deliver,
            position: None,
        }
    }

    fn room(name: &str) -> Target {
        Target::Room(RoomName::parse(name).unwrap())
    }

    fn user(id: &str) -> Target {
        Target::User(UserId::parse(id).unwrap())
    }

    /// The canonical form of the module docs, built by hand from the wire strings.
    fn canonical(parts: [&str; 6], exclude: &[&str]) -> Vec<u8> {
        let mut out = b"sealcast-bus-v1".to_vec();
        let mut field = |s: &str| {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        parts.iter().for_each(|p| field(p));
        out.extend_from_slice(&(exclude.len() as u32).to_be_bytes());
        for id in exclude {
            out.extend_from_slice(&(id.len() as u32).to_be_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    #[test]
    fn the_tag_covers_the_documented_canonical_form_with_exclude_entries() {
        let s = Signer::new(b"secret").unwrap();
        let mut e = env(room("r"));
        e.exclude.push(ClientId::parse(Y).unwrap());
        let json = s.sign(&e);
        let wire = format!(
            r#"{{"serverId":"s1","type":"room","target":"r","event":"e","data":{{"k": [1, 2]}},"exclude":["{X}","{Y}"]"#
        );
        let tag = json.strip_prefix(&wire).unwrap_or_else(|| panic!("{json}"));
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(&canonical(
            ["ws:room:r", "s1", "room", "r", "e", "{\"k\": [1, 2]}"],
            &[X, Y],
        ));
        let want = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(tag, format!(r#","sig":"{want}"}}"#));
        assert!(s.verify("ws:room:r", json.as_bytes()));
        // Verifying covers the entries as received, even those that are not client ids (parsing drops them).
        let odd = json.replace(&format!(r#""{Y}""#), r#""not-an-id""#);
        assert!(!s.verify("ws:room:r", odd.as_bytes()));
        let odd_tag = {
            let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
            mac.update(&canonical(
                ["ws:room:r", "s1", "room", "r", "e", "{\"k\": [1, 2]}"],
                &[X, "not-an-id"],
            ));
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        };
        let odd = odd.replace(&want, &odd_tag);
        assert!(s.verify("ws:room:r", odd.as_bytes()));
        assert_eq!(
            Envelope::parse(odd.as_bytes()).unwrap().exclude,
            vec![ClientId::parse(X).unwrap()]
        );
    }

    #[test]
    fn signed_envelopes_verify_and_still_parse() {
        let s = Signer::new(b"secret").unwrap();
        let e = env(room("r"));
        let json = s.sign(&e);
        assert!(s.verify("ws:room:r", json.as_bytes()));
        let back = Envelope::parse(json.as_bytes()).unwrap();
        assert_eq!(back.data.get(), "{\"k\": [1, 2]}");
    }

    #[test]
    fn disconnect_envelopes_are_signed_over_their_type_and_target() {
        let s = Signer::new(b"secret").unwrap();
        let e = Envelope::disconnect("s1", user("u")).unwrap();
        let json = s.sign(&e);
        assert!(s.verify("ws:user:u", json.as_bytes()));
        assert!(!s.verify("ws:user:u", json.replace("user:u", "user:v").as_bytes()));
        assert!(!s.verify("ws:user:u", e.to_json().as_bytes()));
        // A signed message envelope cannot be turned into a disconnect.
        let msg = s.sign(&env(user("u")));
        let turned = msg.replace(
            "\"type\":\"user\",\"target\":\"u\"",
            "\"type\":\"disconnect\",\"target\":\"user:u\"",
        );
        assert_ne!(turned, msg);
        assert!(!s.verify("ws:user:u", turned.as_bytes()));
    }

    #[test]
    fn forged_unsigned_or_moved_envelopes_fail() {
        let s = Signer::new(b"secret").unwrap();
        let e = env(room("r"));
        let json = s.sign(&e);
        assert!(!Signer::new(b"other").unwrap().verify("ws:room:r", json.as_bytes()));
        assert!(!s.verify("ws:room:other", json.as_bytes()));
        assert!(!s.verify("ws:room:r", e.to_json().as_bytes()));
        let tampered = json.replace("\"e\"", "\"f\"");
        assert!(!s.verify("ws:room:r", tampered.as_bytes()));
        let tampered = json.replace("[1, 2]", "[1,2]");
        assert!(!s.verify("ws:room:r", tampered.as_bytes()));
        let no_exclude = json.replace(&format!(",\"exclude\":[\"{X}\"]"), "");
        assert_ne!(no_exclude, json);
        assert!(!s.verify("ws:room:r", no_exclude.as_bytes()));
        assert!(!s.verify("ws:room:r", b"not json"));
    }
}

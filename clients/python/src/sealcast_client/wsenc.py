"""wsenc/1 as pure code (docs/spec/wsenc1.md, normative): strict base64url, keys and ``kid``, the transcript hash,
the key schedule, the record layer and the client side of the handshake. No I/O, no clock: bytes and JSON text
in, bytes and JSON text out. Primitives come from ``cryptography`` (P-256 ECDH, HKDF-SHA-256, AES-256-GCM).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import SealcastError, decryption_failed, downgrade, key_exhausted, server_auth_failed

#: The suite's name, hashed into the transcript (spec §1).
PROTO = b"wsenc/1 NK P-256 HKDF-SHA256 AES-256-GCM"
#: Records per direction and epoch, the ``key_update`` included (spec §7).
MAX_RECORDS_PER_EPOCH = 1 << 20
#: Largest sequence number a JSON integer can carry exactly.
MAX_SAFE_SEQ = 2**53 - 1
#: Direction bytes in the AAD.
DIR_C2S = 1
DIR_S2C = 2
#: Inner events a record may never carry.
FORBIDDEN_INNER = frozenset({"authenticate", "connected", "encrypted"})
KEY_UPDATE_JSON = '{"event":"key_update","data":{}}'

_B64U = re.compile(r"[A-Za-z0-9_-]*")


def b64u_encode(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Strict base64url (spec §1): no padding, no ``+``/``/``, no whitespace, canonical trailing bits."""
    if not isinstance(text, str) or _B64U.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("invalid base64url")
    try:
        out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise ValueError("invalid base64url") from e
    if b64u_encode(out) != text:
        raise ValueError("non-canonical base64url")
    return out


def lp(data: bytes) -> bytes:
    """``u16be(len) ‖ data``."""
    if len(data) > 0xFFFF:
        raise ValueError("field too long")
    return len(data).to_bytes(2, "big") + data


def parse_public_key(raw: bytes) -> ec.EllipticCurvePublicKey:
    """A SEC1 uncompressed P-256 point (65 bytes, ``0x04`` first), validated on the curve."""
    if len(raw) != 65 or raw[0] != 0x04:
        raise ValueError("not an uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)


def public_bytes(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed SEC1 encoding of a P-256 key's public point."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def kid_of(public_key: bytes) -> bytes:
    """``kid = SHA-256(S)[0..8]``."""
    return hashlib.sha256(public_key).digest()[:8]


def hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA-256 extract-and-expand; an empty salt means 32 zero bytes (RFC 5869 §2.2)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


def transcript_hash(
    kid: bytes, server_static: bytes, e_c: bytes, e_s: bytes, salt: bytes, conn_id: str, user_id: str
) -> bytes:
    """``th`` (spec §4)."""
    h = hashlib.sha256()
    for part in (PROTO, kid, server_static, e_c, e_s, salt, conn_id.encode(), user_id.encode()):
        h.update(lp(part))
    return h.digest()


def nonce(iv: bytes, seq: int) -> bytes:
    """``iv XOR (0^32 ‖ u64be(seq))``."""
    pad = seq.to_bytes(12, "big")
    return bytes(a ^ b for a, b in zip(iv, pad))


def aad(direction: int, th: bytes, epoch: int, seq: int) -> bytes:
    """``"wsenc/1 rec" ‖ dir ‖ th ‖ u32be(n) ‖ u64be(seq)`` (56 bytes)."""
    return b"wsenc/1 rec" + bytes([direction]) + th + epoch.to_bytes(4, "big") + seq.to_bytes(8, "big")


@dataclass
class DirectionState:
    """One direction's keys (spec §5) and its position: epoch ``n`` and the next ``seq``."""

    direction: int
    th: bytes
    traffic_secret: bytearray
    max_records: int = MAX_RECORDS_PER_EPOCH
    epoch: int = 0
    seq: int = 0
    key: bytes = field(default=b"", repr=False)
    iv: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self._derive()

    def __repr__(self) -> str:  # never the secrets
        return f"DirectionState(direction={self.direction}, epoch={self.epoch}, seq={self.seq})"

    def _derive(self) -> None:
        ts = bytes(self.traffic_secret)
        self.key = hkdf(b"", ts, b"wsenc/1 key", 32)
        self.iv = hkdf(b"", ts, b"wsenc/1 iv", 12)

    def advance_epoch(self) -> None:
        """Key update: ``ts_{n+1} = HKDF("", ts_n, "wsenc/1 upd")``; the old secret is overwritten."""
        if self.epoch >= 0xFFFFFFFF:
            raise key_exhausted()
        nxt = hkdf(b"", bytes(self.traffic_secret), b"wsenc/1 upd", 32)
        self.traffic_secret[:] = nxt
        self.epoch += 1
        self.seq = 0
        self._derive()

    def encrypt(self, seq: int, plaintext: bytes) -> bytes:
        return AESGCM(self.key).encrypt(nonce(self.iv, seq), plaintext, aad(self.direction, self.th, self.epoch, seq))

    def decrypt(self, seq: int, ciphertext: bytes) -> bytes | None:
        try:
            return AESGCM(self.key).decrypt(
                nonce(self.iv, seq), ciphertext, aad(self.direction, self.th, self.epoch, seq)
            )
        except InvalidTag:
            return None

    def wipe(self) -> None:
        """Overwrite the traffic secret (Python cannot promise the derived ``bytes`` copies are gone)."""
        for i in range(len(self.traffic_secret)):
            self.traffic_secret[i] = 0
        self.key = b""
        self.iv = b""


@dataclass(frozen=True)
class Schedule:
    """The handshake's outputs: ``th`` and both directions' epoch-0 traffic secrets."""

    th: bytes
    ts_c2s: bytes = field(repr=False)
    ts_s2c: bytes = field(repr=False)


def key_schedule(ikm: bytes, salt: bytes, th: bytes) -> Schedule:
    """``ts_c2s_0`` and ``ts_s2c_0`` (spec §5)."""
    return Schedule(
        th=th,
        ts_c2s=hkdf(salt, ikm, b"wsenc/1 c2s" + th, 32),
        ts_s2c=hkdf(salt, ikm, b"wsenc/1 s2c" + th, 32),
    )


def envelope(seq: int, iv: bytes, ct: bytes) -> str:
    """The ``encrypted`` frame's text."""
    return json.dumps(
        {"event": "encrypted", "data": {"seq": seq, "iv": b64u_encode(iv), "ct": b64u_encode(ct)}},
        separators=(",", ":"),
    )


class RecordSealer:
    """Seals outbound records of one direction in order, updating keys before the epoch's limit (spec §7)."""

    def __init__(self, state: DirectionState, pad_bucket: int = 1) -> None:
        self.state = state
        self.pad_bucket = max(1, int(pad_bucket))

    def pad(self, plaintext: bytes) -> bytes:
        """Zero-pad to a multiple of the bucket (off when the bucket is 1)."""
        if self.pad_bucket <= 1:
            return plaintext
        target = max(self.pad_bucket, -(-len(plaintext) // self.pad_bucket) * self.pad_bucket)
        return plaintext + b"\x00" * (target - len(plaintext))

    def seal_raw(self, plaintext: bytes) -> str:
        """Seal exactly one record at the current ``seq`` (no automatic key update)."""
        st = self.state
        seq = st.seq
        if seq >= st.max_records or seq > MAX_SAFE_SEQ:
            raise key_exhausted()
        ct = st.encrypt(seq, plaintext)
        st.seq = seq + 1
        return envelope(seq, nonce(st.iv, seq), ct)

    def update_keys(self) -> str:
        """The ``key_update`` record (the last of this epoch); later records use the next epoch's keys."""
        frame = self.seal_raw(self.pad(KEY_UPDATE_JSON.encode()))
        self.state.advance_epoch()
        return frame

    def seal(self, message: dict[str, Any] | str) -> list[str]:
        """One inner message as one frame, or two when the epoch is full and a ``key_update`` goes first."""
        text = message if isinstance(message, str) else json.dumps(message, separators=(",", ":"), ensure_ascii=False)
        out = []
        if self.state.seq >= self.state.max_records - 1:
            out.append(self.update_keys())
        out.append(self.seal_raw(self.pad(text.encode("utf-8"))))
        return out


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate key")
        out[k] = v
    return out


def _reject_constant(_name: str) -> Any:
    raise ValueError("not JSON")


def strict_loads(text: str) -> Any:
    """JSON with duplicate keys, NaN and Infinity refused; numbers with a fraction or exponent become floats."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def parse_envelope(text: Any) -> tuple[int, str, str]:
    """An inbound frame of an encrypted session: ``(seq, iv, ct)``. A non-envelope is a downgrade (4004), a
    malformed envelope is 4005 (spec §6 step 1, §8)."""
    if not isinstance(text, str):
        raise downgrade("binary frame on an encrypted session")
    try:
        v = strict_loads(text)
    except (ValueError, RecursionError):
        if re.match(r'\s*\{\s*"event"\s*:\s*"encrypted"', text):
            raise decryption_failed() from None
        raise downgrade("unexpected plaintext frame on an encrypted session") from None
    if not isinstance(v, dict) or v.get("event") != "encrypted":
        raise downgrade("unexpected plaintext frame on an encrypted session")
    d = v.get("data")
    if len(v) != 2 or not isinstance(d, dict) or set(d) != {"seq", "iv", "ct"}:
        raise decryption_failed()
    seq, iv, ct = d["seq"], d["iv"], d["ct"]
    # A JSON integer literal only: Python parses `1.0` and `1e0` as floats; bool is an int subclass.
    if type(seq) is not int or not 0 <= seq <= MAX_SAFE_SEQ or not isinstance(iv, str) or not isinstance(ct, str):
        raise decryption_failed()
    return seq, iv, ct


class RecordOpener:
    """Opens inbound records of one direction in order (spec §6 receiver steps)."""

    def __init__(self, state: DirectionState) -> None:
        self.state = state

    def verify_confirm(self, confirm: bytes) -> None:
        """Client side: the server's ``confirm`` tag (consumes s2c seq 0)."""
        st = self.state
        if st.direction != DIR_S2C or st.epoch != 0 or st.seq != 0 or len(confirm) != 16:
            raise server_auth_failed()
        if st.decrypt(0, confirm) != b"":
            raise server_auth_failed()
        st.seq = 1

    def open_frame(self, text: Any) -> dict[str, Any] | None:
        """One frame's inner message, or ``None`` for a consumed ``key_update``."""
        seq, iv_text, ct_text = parse_envelope(text)
        st = self.state
        if seq >= st.max_records:
            raise key_exhausted()
        if seq != st.seq:
            raise decryption_failed()
        try:
            iv = b64u_decode(iv_text)
            ct = b64u_decode(ct_text)
        except ValueError:
            raise decryption_failed() from None
        if not hmac.compare_digest(iv, nonce(st.iv, seq)) or len(ct) < 16:
            raise decryption_failed()
        pt = st.decrypt(seq, ct)
        if pt is None:
            raise decryption_failed()
        body = pt.rstrip(b"\x00")
        if not body:
            raise decryption_failed()
        try:
            msg = strict_loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise decryption_failed() from None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str) or msg["event"] in FORBIDDEN_INNER:
            raise decryption_failed()
        st.seq = seq + 1
        if msg["event"] == "key_update":
            st.advance_epoch()
            return None
        return msg


@dataclass(frozen=True)
class ServerKey:
    """A pinned server static key: ``kid`` (8 bytes) and the 65-byte public point, both base64url."""

    kid: str
    public_key: str


@dataclass
class _ResolvedKey:
    kid: bytes
    public: bytes
    key: ec.EllipticCurvePublicKey


def resolve_server_keys(keys: Iterable[ServerKey | dict[str, str]]) -> list[_ResolvedKey]:
    """Decode and check pinned keys: each ``kid`` must be ``SHA-256(publicKey)[0..8]``."""
    out = []
    for k in keys:
        kid_text, pub_text = (k.kid, k.public_key) if isinstance(k, ServerKey) else (k["kid"], k["publicKey"])
        try:
            kid, pub = b64u_decode(kid_text), b64u_decode(pub_text)
            key = parse_public_key(pub)
        except (ValueError, TypeError):
            raise SealcastError("CONFIG", "invalid pinned server key", fatal=True) from None
        if kid != kid_of(pub):
            raise SealcastError("CONFIG", "pinned kid does not match its public key", fatal=True)
        out.append(_ResolvedKey(kid, pub, key))
    if not out:
        raise SealcastError("CONFIG", "no pinned server keys", fatal=True)
    return out


def authenticate_fields(ephemeral: ec.EllipticCurvePrivateKey, preferred: _ResolvedKey) -> dict[str, Any]:
    """The crypto fields of ``authenticate``: ``v``, ``publicKey``, ``kid``."""
    return {"v": 1, "publicKey": b64u_encode(public_bytes(ephemeral)), "kid": b64u_encode(preferred.kid)}


@dataclass
class Session:
    """An established wsenc/1 session: the connection's id, user, ``kid`` and the two record directions."""

    conn_id: str
    user_id: str
    kid: str
    sealer: RecordSealer
    opener: RecordOpener

    def destroy(self) -> None:
        """Wipe both directions' secrets."""
        self.sealer.state.wipe()
        self.opener.state.wipe()


def client_handshake(
    ephemeral: ec.EllipticCurvePrivateKey,
    pinned: list[_ResolvedKey],
    connected: dict[str, Any],
    *,
    max_records_per_epoch: int = MAX_RECORDS_PER_EPOCH,
    pad_bucket: int = 1,
) -> Session:
    """The client's side of spec §3 after ``connected``: check every field, the pinned ``kid``, the server's
    ephemeral key, derive the keys and verify ``confirm``. Never falls back to plaintext."""
    d = connected
    fields = ("serverPublicKey", "salt", "kid", "confirm")
    if type(d.get("v")) is not int or d["v"] != 1 or any(not isinstance(d.get(f), str) for f in fields):
        raise downgrade()
    if not isinstance(d.get("id"), str) or not isinstance(d.get("userId", ""), str):
        raise SealcastError("PROTOCOL", "malformed connected message", close_code=1002)
    try:
        kid = b64u_decode(d["kid"])
        e_s = b64u_decode(d["serverPublicKey"])
        salt = b64u_decode(d["salt"])
        confirm = b64u_decode(d["confirm"])
        e_s_key = parse_public_key(e_s)
    except ValueError:
        raise server_auth_failed() from None
    server = next((k for k in pinned if hmac.compare_digest(k.kid, kid)), None)
    if server is None or len(salt) != 32:
        raise server_auth_failed()
    conn_id, user_id = d["id"], d.get("userId", "")
    ee = ephemeral.exchange(ec.ECDH(), e_s_key)
    es = ephemeral.exchange(ec.ECDH(), server.key)
    th = transcript_hash(kid, server.public, public_bytes(ephemeral), e_s, salt, conn_id, user_id)
    sched = key_schedule(ee + es, salt, th)
    c2s = DirectionState(DIR_C2S, th, bytearray(sched.ts_c2s), max_records_per_epoch)
    s2c = DirectionState(DIR_S2C, th, bytearray(sched.ts_s2c), MAX_RECORDS_PER_EPOCH)
    opener = RecordOpener(s2c)
    opener.verify_confirm(confirm)
    return Session(conn_id, user_id, b64u_encode(kid), RecordSealer(c2s, pad_bucket), opener)


def generate_ephemeral() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 ephemeral key (one per connection attempt)."""
    return ec.generate_private_key(ec.SECP256R1())

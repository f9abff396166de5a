"""wsenc/1 known answers: Appendix A of docs/spec/wsenc1.md, read from the spec itself, reproduced by the
Python client's pure code (transcript hash, key schedule, confirm, records, key update, the negative checks)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealcast_client import wsenc
from sealcast_client.errors import SealcastError

SPEC = Path(__file__).resolve().parents[3] / "docs" / "spec" / "wsenc1.md"


def appendix_a() -> dict[str, str]:
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("## Appendix A") : text.index("## Appendix B")]
    block = section[section.index("```text") : section.index("```", section.index("```text") + 7)]
    values = {}
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+=\s+([0-9a-f]+)\b", line)
        if m:
            values[m.group(1)] = m.group(2)
    m = re.search(r"s2c epoch 0 seq 1: .*\n\s+ct = ([0-9a-f]+)", block)
    values["ct_s2c_1"] = m.group(1)
    m = re.search(r"c2s epoch 0 seq 0: .*\n\s+ct = ([0-9a-f]+)", block)
    values["ct_c2s_0"] = m.group(1)
    wire = re.search(r'```json\n(\{"event":"connected".*)\n(\{"event":"encrypted".*)\n```', section)
    values["connected_wire"], values["record_wire"] = wire.group(1), wire.group(2)
    return values


KAT = appendix_a()
H = bytes.fromhex


def key(label: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(hashlib.sha256(label.encode()).digest(), "big"), ec.SECP256R1())


S = key("wsenc/1 test server static")
E_C = key("wsenc/1 test client ephemeral")
E_S = key("wsenc/1 test server ephemeral")
SALT = hashlib.sha256(b"wsenc/1 test salt").digest()


def schedule() -> wsenc.Schedule:
    th = wsenc.transcript_hash(
        wsenc.kid_of(wsenc.public_bytes(S)),
        wsenc.public_bytes(S),
        wsenc.public_bytes(E_C),
        wsenc.public_bytes(E_S),
        SALT,
        "c-0001",
        "u-42",
    )
    ee = E_C.exchange(ec.ECDH(), E_S.public_key())
    es = E_C.exchange(ec.ECDH(), S.public_key())
    return wsenc.key_schedule(ee + es, SALT, th)


def direction(d: int) -> wsenc.DirectionState:
    s = schedule()
    return wsenc.DirectionState(d, s.th, bytearray(s.ts_c2s if d == wsenc.DIR_C2S else s.ts_s2c))


def test_the_spec_appendix_a_was_read():
    for k in ("S", "e_c", "e_s", "kid", "th", "ts_c2s_0", "key_s2c_0", "confirm", "ct_s2c_1", "ct_c2s_0"):
        assert KAT.get(k), k


def test_public_keys_kid_and_dh_match_the_spec():
    assert wsenc.public_bytes(S).hex() == KAT["S"]
    assert wsenc.public_bytes(E_C).hex() == KAT["e_c"]
    assert wsenc.public_bytes(E_S).hex() == KAT["e_s"]
    assert wsenc.kid_of(wsenc.public_bytes(S)).hex() == KAT["kid"]
    assert E_C.exchange(ec.ECDH(), E_S.public_key()).hex() == KAT["ee"]
    assert E_C.exchange(ec.ECDH(), S.public_key()).hex() == KAT["es"]


def test_transcript_hash_and_key_schedule_match_the_spec():
    s = schedule()
    assert s.th.hex() == KAT["th"]
    assert s.ts_c2s.hex() == KAT["ts_c2s_0"]
    assert s.ts_s2c.hex() == KAT["ts_s2c_0"]
    c2s, s2c = direction(wsenc.DIR_C2S), direction(wsenc.DIR_S2C)
    assert (c2s.key.hex(), c2s.iv.hex()) == (KAT["key_c2s_0"], KAT["iv_c2s_0"])
    assert (s2c.key.hex(), s2c.iv.hex()) == (KAT["key_s2c_0"], KAT["iv_s2c_0"])


def test_key_update_derives_the_spec_epoch_1_keys():
    c2s = direction(wsenc.DIR_C2S)
    c2s.advance_epoch()
    assert bytes(c2s.traffic_secret).hex() == KAT["ts_c2s_1"]
    assert (c2s.key.hex(), c2s.iv.hex(), c2s.epoch, c2s.seq) == (KAT["key_c2s_1"], KAT["iv_c2s_1"], 1, 0)


def test_records_and_confirm_match_the_spec():
    s2c = direction(wsenc.DIR_S2C)
    assert s2c.encrypt(0, b"").hex() == KAT["confirm"]
    padded = b'{"event":"message","data":{"text":"hi"}}' + b"\x00" * 24
    assert s2c.encrypt(1, padded).hex() == KAT["ct_s2c_1"]
    c2s = direction(wsenc.DIR_C2S)
    sealer = wsenc.RecordSealer(c2s)
    frame = json.loads(sealer.seal({"event": "ping", "data": {}})[0])
    assert frame["data"]["seq"] == 0
    assert wsenc.b64u_decode(frame["data"]["ct"]).hex() == KAT["ct_c2s_0"]


def test_the_client_handshake_accepts_the_spec_connected_frame_and_opens_its_record():
    connected = json.loads(KAT["connected_wire"])["data"]
    pinned = wsenc.resolve_server_keys([{"kid": connected["kid"], "publicKey": wsenc.b64u_encode(wsenc.public_bytes(S))}])
    connected["userId"] = "u-42"
    session = wsenc.client_handshake(E_C, pinned, connected)
    assert (session.conn_id, session.user_id, session.kid) == ("c-0001", "u-42", connected["kid"])
    assert session.opener.open_frame(KAT["record_wire"]) == {"event": "message", "data": {"text": "hi"}}
    assert session.opener.state.seq == 2


def test_a_wrong_confirm_fails_the_handshake():
    connected = json.loads(KAT["connected_wire"])["data"]
    tag = bytearray(wsenc.b64u_decode(connected["confirm"]))
    tag[0] ^= 1
    connected["confirm"] = wsenc.b64u_encode(bytes(tag))
    pinned = wsenc.resolve_server_keys([{"kid": connected["kid"], "publicKey": wsenc.b64u_encode(wsenc.public_bytes(S))}])
    with pytest.raises(SealcastError) as e:
        wsenc.client_handshake(E_C, pinned, connected)
    assert e.value.code == "SERVER_AUTH_FAILED"


def test_a_connected_without_crypto_fields_is_a_downgrade():
    pinned = wsenc.resolve_server_keys([{"kid": wsenc.b64u_encode(wsenc.kid_of(wsenc.public_bytes(S))), "publicKey": wsenc.b64u_encode(wsenc.public_bytes(S))}])
    with pytest.raises(SealcastError) as e:
        wsenc.client_handshake(E_C, pinned, {"id": "c-0001", "userId": "u-42", "time": "t"})
    assert (e.value.code, e.value.close_code) == ("DOWNGRADE", 4004)


@pytest.mark.parametrize(
    "tamper",
    ["wrong seq in the AAD", "wrong direction byte", "nonce of another seq", "flipped tag bit"],
)
def test_the_spec_negative_checks_fail(tamper):
    s2c = direction(wsenc.DIR_S2C)
    ct = bytearray(H(KAT["ct_s2c_1"]))
    seq, d = 1, wsenc.DIR_S2C
    if tamper == "wrong seq in the AAD":
        aad = wsenc.aad(d, s2c.th, 0, 2)
        nonce = wsenc.nonce(s2c.iv, 1)
    elif tamper == "wrong direction byte":
        aad = wsenc.aad(wsenc.DIR_C2S, s2c.th, 0, 1)
        nonce = wsenc.nonce(s2c.iv, 1)
    elif tamper == "nonce of another seq":
        aad = wsenc.aad(d, s2c.th, 0, 1)
        nonce = wsenc.nonce(s2c.iv, 2)
    else:
        aad = wsenc.aad(d, s2c.th, 0, 1)
        nonce = wsenc.nonce(s2c.iv, 1)
        ct[-1] ^= 1
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    with pytest.raises(InvalidTag):
        AESGCM(s2c.key).decrypt(nonce, bytes(ct), aad)
    assert s2c.decrypt(seq, H(KAT["ct_s2c_1"])) is not None  # the untampered record opens



def opener_after_confirm() -> wsenc.RecordOpener:
    o = wsenc.RecordOpener(direction(wsenc.DIR_S2C))
    o.verify_confirm(H(KAT["confirm"]))
    return o


@pytest.mark.parametrize(
    "frame, code",
    [
        ('{"event":"chat","data":{}}', 4004),
        ("[]", 4004),
        ("not json", 4004),
        ('{"event":"encrypted","data":{"seq":1.0,"iv":"x","ct":"y"}}', 4005),
        ('{"event":"encrypted","data":{"seq":1e0,"iv":"x","ct":"y"}}', 4005),
        ('{"event":"encrypted","data":{"seq":true,"iv":"x","ct":"y"}}', 4005),
        ('{"event":"encrypted","data":{"seq":1,"iv":"x","ct":"y","z":1}}', 4005),
        ('{"event":"encrypted","data":{"seq":2,"iv":"x","ct":"y"}}', 4005),
        ('{"event":"encrypted","data":{"seq":1048576,"iv":"x","ct":"y"}}', 4006),
        ('{"event":"encrypted","data":{"seq":1,"iv":"x","ct":"y"},"event":"encrypted"}', 4005),
    ],
)
def test_malformed_or_out_of_order_envelopes_close_with_the_spec_code(frame, code):
    with pytest.raises(SealcastError) as e:
        opener_after_confirm().open_frame(frame)
    assert e.value.close_code == code


def test_a_replayed_record_is_refused():
    o = opener_after_confirm()
    assert o.open_frame(KAT["record_wire"])["event"] == "message"
    with pytest.raises(SealcastError) as e:
        o.open_frame(KAT["record_wire"])
    assert e.value.close_code == 4005


@pytest.mark.parametrize("text", ["AA==", "A+8", "A/8", " AA", "AB", "A"])
def test_base64url_is_decoded_strictly(text):
    with pytest.raises(ValueError):
        wsenc.b64u_decode(text)


def test_a_full_epoch_is_closed_with_a_key_update_and_both_sides_follow():
    c2s_send, c2s_recv = direction(wsenc.DIR_C2S), direction(wsenc.DIR_C2S)
    c2s_send.max_records = c2s_recv.max_records = 3
    sealer, opener = wsenc.RecordSealer(c2s_send), wsenc.RecordOpener(c2s_recv)
    frames = [f for i in range(4) for f in sealer.seal({"event": "n", "data": i})]
    got = [m for m in (opener.open_frame(f) for f in frames) if m is not None]
    assert [m["data"] for m in got] == [0, 1, 2, 3]
    assert (c2s_send.epoch, c2s_recv.epoch) == (1, 1)
    assert [json.loads(f)["data"]["seq"] for f in frames] == [0, 1, 2, 0, 1]


def test_pinned_keys_whose_kid_does_not_match_are_refused():
    pub = wsenc.b64u_encode(wsenc.public_bytes(S))
    with pytest.raises(SealcastError) as e:
        wsenc.resolve_server_keys([{"kid": "AAAAAAAAAAA", "publicKey": pub}])
    assert e.value.code == "CONFIG"

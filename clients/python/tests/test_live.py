"""Live tests: the Python client against the real ``sealcast`` binary over real sockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from sealcast_client import Client, SealcastError, connect, wsenc
from conftest import sign_token

HISTORY = {"SEALCAST_ALLOW_CLIENT_PUBLISH": "true", "SEALCAST_HISTORY_ROOMS": "chat:*"}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def tapped(client: Client) -> list[tuple[str, str]]:
    wire: list[tuple[str, str]] = []
    client._tap = lambda d, f: wire.append((d, f))
    return wire


async def next_message(client: Client, event: str):
    while True:
        m = await client.recv()
        if m.event == event:
            return m


def test_handshake_with_the_pinned_key_then_only_encrypted_frames(servers):
    s = servers({"SEALCAST_ALLOW_CLIENT_PUBLISH": "true"})

    async def body():
        c = Client(s.url, token=sign_token("alice"), server_keys=s.keys, reconnect=False)
        wire = tapped(c)
        info = await c.start()
        await c.join("lobby")
        await c.update_keys()
        await c.publish("lobby", "chat", {"text": "secret sauce"})
        await c.close()
        return info, wire

    info, wire = run(body())
    assert (info.encrypted, info.user_id, info.kid) == (True, "alice", s.kid)
    events = [(d, json.loads(f)["event"]) for d, f in wire]
    assert events[:2] == [("out", "authenticate"), ("in", "connected")]
    assert len(events) > 4
    assert all(e == "encrypted" for _, e in events[2:]), events
    assert not any("secret sauce" in f for _, f in wire)


def test_a_wrong_pinned_key_is_refused_and_the_client_stops(servers):
    s = servers()
    other = ec.generate_private_key(ec.SECP256R1())
    pub = wsenc.public_bytes(other)
    keys = [{"kid": wsenc.b64u_encode(wsenc.kid_of(pub)), "publicKey": wsenc.b64u_encode(pub)}]

    async def body():
        c = Client(s.url, token=sign_token("alice"), server_keys=keys)
        closes = []
        c.on("close", lambda code, err: closes.append(code))
        with pytest.raises(SealcastError):
            await c.start()
        return c.state, closes

    state, closes = run(body())
    assert state == "closed"
    assert closes == [4004]


def test_join_answers_the_rooms_joined_and_those_refused(servers):
    s = servers()

    async def body():
        async with Client(s.url, token=sign_token("bob", rooms=["chat:*"]), server_keys=s.keys) as c:
            return await c.join(["chat:a", "secret"])

    result = run(body())
    assert [r.room for r in result.rooms] == ["chat:a"]
    assert [(r.room, r.reason) for r in result.refused] == [("secret", "Room not allowed")]


def test_publish_is_acknowledged_and_delivered_to_the_other_member(servers):
    s = servers({"SEALCAST_ALLOW_CLIENT_PUBLISH": "true"})

    async def body():
        a = await connect(s.url, token=sign_token("alice"), server_keys=s.keys)
        b = await connect(s.url, token=sign_token("bob"), server_keys=s.keys)
        await a.join("lobby")
        await b.join("lobby")
        ack = await a.publish("lobby", "chat", {"text": "hi bob"}, id="m-1")
        got = await next_message(b, "chat")
        await a.close()
        await b.close()
        return ack, got

    ack, got = run(body())
    assert ack.id == "m-1"
    assert (got.event, got.data, got.room) == ("chat", {"text": "hi bob"}, None)


def test_a_refused_publish_raises_the_server_error(servers):
    s = servers({"SEALCAST_ALLOW_CLIENT_PUBLISH": "true"})

    async def body():
        async with Client(s.url, token=sign_token("alice"), server_keys=s.keys) as c:
            with pytest.raises(SealcastError) as e:
                await c.publish("not-joined", "chat", 1)
            return e.value

    err = run(body())
    assert (err.code, err.server_message) == ("SERVER_ERROR", "Not a member of room")


def test_messages_of_a_history_room_carry_offset_and_epoch(servers):
    s = servers(HISTORY)

    async def body():
        a = await connect(s.url, token=sign_token("alice"), server_keys=s.keys)
        b = await connect(s.url, token=sign_token("bob"), server_keys=s.keys)
        joined = await a.join("chat:h")
        await b.join("chat:h")
        acks = [await a.publish("chat:h", "n", i) for i in range(3)]
        got = [await next_message(b, "n") for _ in range(3)]
        pos = b.position("chat:h")
        await a.close()
        await b.close()
        return joined, acks, got, pos

    joined, acks, got, pos = run(body())
    assert joined.rooms[0].offset == 0 and isinstance(joined.rooms[0].epoch, str)
    assert [a.offset for a in acks] == [1, 2, 3]
    assert [(m.room, m.offset, m.data) for m in got] == [("chat:h", 1, 0), ("chat:h", 2, 1), ("chat:h", 3, 2)]
    assert {m.epoch for m in got} == {acks[0].epoch}
    assert (pos.offset, pos.epoch) == (3, acks[0].epoch)


def test_after_a_dropped_connection_the_client_recovers_the_missed_messages_in_order(servers):
    s = servers(HISTORY)

    async def body():
        a = await connect(s.url, token=sign_token("alice"), server_keys=s.keys)
        b = await connect(s.url, token=sign_token("bob"), server_keys=s.keys, backoff_initial=1.0)
        rejoined: asyncio.Queue = asyncio.Queue()
        b.on("rejoined", rejoined.put_nowait)
        await a.join("chat:r")
        await b.join("chat:r")
        await a.publish("chat:r", "n", 0)
        assert (await next_message(b, "n")).offset == 1
        b._attempt.ws.transport.abort()  # the network drops: close 1006, reconnect after about a second
        for i in range(1, 6):
            await a.publish("chat:r", "n", i)
        result = await rejoined.get()
        await a.publish("chat:r", "n", 6)
        got = [await next_message(b, "n") for _ in range(6)]
        await a.close()
        await b.close()
        return result, got

    result, got = run(body())
    assert [(r.room, r.recovered) for r in result.rooms] == [("chat:r", True)]
    assert [(m.offset, m.data) for m in got] == [(i + 1, i) for i in range(1, 7)]


def test_keys_ratchet_through_many_epochs_with_the_server(servers):
    s = servers({"SEALCAST_ALLOW_CLIENT_PUBLISH": "true"})

    async def body():
        async with Client(s.url, token=sign_token("alice"), server_keys=s.keys, max_records_per_epoch=3) as c:
            await c.join("lobby")
            acks = [await c.publish("lobby", "n", i, id=f"k{i}") for i in range(10)]
            return acks, c._attempt.session.sealer.state.epoch, c.state

    acks, epoch, state = run(body())
    assert [a.id for a in acks] == [f"k{i}" for i in range(10)]
    assert epoch >= 4
    assert state == "open"


def test_a_refused_token_stops_the_client_with_the_server_error(servers):
    s = servers()

    async def body():
        c = Client(s.url, token=sign_token("mallory", secret="not-the-server-secret-0123456789abcdef"), server_keys=s.keys)
        closes = []
        c.on("close", lambda code, err: closes.append(code))
        with pytest.raises(SealcastError) as e:
            await c.start()
        return e.value, closes, c.state

    err, closes, state = run(body())
    assert (err.code, err.server_message) == ("SERVER_ERROR", "Authentication failed")
    assert closes == [4003]
    assert state == "closed"


PRESENCE = {"SEALCAST_PRESENCE_ROOMS": "team:*"}


def test_presence_lists_the_rooms_members_with_exact_counts(servers):
    s = servers(PRESENCE)

    async def body():
        a = await connect(s.url, token=sign_token("alice"), server_keys=s.keys, reconnect=False)
        b = await connect(s.url, token=sign_token("bob"), server_keys=s.keys, reconnect=False)
        await a.join("team:1")
        await b.join("team:1")
        p = await a.presence("team:1")
        await a.close()
        await b.close()
        return p, a.info.id, b.info.id

    p, a_id, b_id = run(body())
    assert (p.room, p.clients, p.users, p.truncated) == ("team:1", 2, 2, False)
    assert sorted((m.client, m.user) for m in p.members) == sorted([(a_id, "alice"), (b_id, "bob")])
    assert all(m.since is not None and m.since.tzinfo is not None for m in p.members)


def test_members_joining_and_leaving_arrive_as_member_events(servers):
    s = servers(PRESENCE)

    async def body():
        a = await connect(s.url, token=sign_token("alice"), server_keys=s.keys, reconnect=False)
        await a.join("team:1")
        b = await connect(s.url, token=sign_token("bob"), server_keys=s.keys, reconnect=False)
        await b.join("team:1")
        joined = await next_message(a, "member_joined")
        await b.close()
        left = await next_message(a, "member_left")
        await a.close()
        return joined, left, b.info.id

    joined, left, b_id = run(body())
    assert joined.data == {"room": "team:1", "client": b_id, "user": "bob"}
    assert left.data == {"room": "team:1", "client": b_id, "user": "bob"}


def test_presence_in_a_room_without_it_raises_the_servers_error(servers):
    s = servers(PRESENCE)

    async def body():
        c = await connect(s.url, token=sign_token("alice"), server_keys=s.keys, reconnect=False)
        await c.join("lobby")
        with pytest.raises(SealcastError) as err:
            await c.presence("lobby")
        await c.join("team:2")
        after = await c.presence("team:2")
        await c.close()
        return err.value, after

    err, after = run(body())
    assert (err.code, err.server_message) == ("SERVER_ERROR", "Presence not enabled for room")
    assert (after.room, after.clients) == ("team:2", 1)  # the refusal answered its own query, not the next one

"""The asyncio client: one WebSocket (the ``websockets`` library) at a time, reconnecting with backoff, re-joining
its rooms and recovering what it missed in rooms with history (offset and epoch per room).

Modelled on the JavaScript client (``clients/js/src/client.ts``); the wire is docs/spec/wsenc1.md and the
delivery contract of rooms with history (``joined``, ``ack``, ``room``/``offset``/``epoch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from . import wsenc
from .errors import CloseCode, SealcastError, downgrade, reconnect_policy

#: Events an application may not send itself: they belong to the protocol.
NOT_SENDABLE = frozenset(
    {"authenticate", "connected", "encrypted", "key_update", "joined", "ack"}
    | {"presence", "member_joined", "member_left"}
)
#: The error texts that answer a presence query (in order, like the queries).
PRESENCE_ERRORS = frozenset({"Not a member of room", "Presence not enabled for room", "Presence unavailable"})
#: Lifecycle names of ``Client.on``.
LIFECYCLE = frozenset({"connected", "close", "error", "reconnecting", "rejoined"})
#: Most rooms whose last position is tracked for recovery.
MAX_TRACKED_ROOMS = 1024
#: A sending direction's keys are updated after this long even below the record limit (spec §7).
MAX_EPOCH_SECONDS = 3600.0


@dataclass(frozen=True)
class ConnectedInfo:
    """The session the server confirmed: connection id, user id, server time, whether it is encrypted, ``kid``."""

    id: str
    user_id: str
    time: str
    encrypted: bool
    kid: str | None = None


@dataclass(frozen=True)
class StreamPosition:
    """A position in a room with history: the last ``offset`` received and the stream's ``epoch``."""

    offset: int
    epoch: str


@dataclass(frozen=True)
class Message:
    """An application message. ``room``, ``offset`` and ``epoch`` are set for messages of rooms with history."""

    event: str
    data: Any = None
    room: str | None = None
    offset: int | None = None
    epoch: str | None = None


@dataclass(frozen=True)
class Ack:
    """The server's answer to a ``publish`` with an ``id``; in a room with history, the message's position."""

    id: str
    offset: int | None = None
    epoch: str | None = None


@dataclass(frozen=True)
class JoinedRoom:
    """A joined room; rooms with history add the latest ``offset`` and ``epoch``, and ``recovered`` when asked."""

    room: str
    offset: int | None = None
    epoch: str | None = None
    recovered: bool | None = None


@dataclass(frozen=True)
class RefusedRoom:
    """A refused room and the server's reason (``Room not allowed``, ``Invalid room name``, ...)."""

    room: str
    reason: str


@dataclass(frozen=True)
class JoinResult:
    """The server's ``joined`` answer."""

    rooms: list[JoinedRoom] = field(default_factory=list)
    refused: list[RefusedRoom] = field(default_factory=list)


@dataclass(frozen=True)
class Member:
    """A member of a presence room: its connection id, user id (``None`` for an anonymous session) and when it
    joined the room (UTC, to the millisecond, by its instance's clock; ``None`` if the server sent no valid time)."""

    client: str
    user: str | None
    since: datetime | None


@dataclass(frozen=True)
class Presence:
    """Who is in a room: at most the server's ``presence.max_members`` members (in no particular order), the exact
    numbers of ``clients`` and distinct ``users``, and whether the list was ``truncated``."""

    room: str
    members: list[Member]
    clients: int
    users: int
    truncated: bool


def _utc(value: Any) -> datetime | None:
    try:
        # Python 3.10's fromisoformat does not read the "Z" suffix the server writes.
        return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        return None


def _presence(data: Any) -> Presence:
    """Reads a ``presence`` answer; entries that are not members are skipped, missing counts read as 0."""
    d = data if isinstance(data, dict) else {}
    members = []
    for m in d.get("members") or []:
        if not isinstance(m, dict) or not isinstance(m.get("client"), str):
            continue
        user = m.get("user")
        members.append(Member(m["client"], user if isinstance(user, str) else None, _utc(m.get("since"))))

    def count(k: str) -> int:
        v = d.get(k)
        return v if type(v) is int else 0

    room = d.get("room")
    truncated = d.get("truncated") is True
    return Presence(room if isinstance(room, str) else "", members, count("clients"), count("users"), truncated)


class Extension(Protocol):
    """A protocol extension (for example presence) plugged into the client with ``Client.add_extension``.

    ``events`` are the inner event names it consumes: such messages go to ``on_message`` instead of ``recv()``.
    ``on_connected`` runs after every (re)connect, once the rooms were re-joined, to restore the extension's
    server-side state; it may call ``client.send_raw``.
    """

    events: frozenset[str]

    def on_message(self, client: "Client", message: dict[str, Any]) -> None: ...

    async def on_connected(self, client: "Client") -> None: ...


def _join_result(data: Any) -> JoinResult:
    """A ``joined`` payload, checked field by field (anything malformed is left out)."""
    d = data if isinstance(data, dict) else {}
    rooms = []
    for r in d.get("rooms") if isinstance(d.get("rooms"), list) else []:
        if not isinstance(r, dict) or not isinstance(r.get("room"), str):
            continue
        offset = r.get("offset")
        rooms.append(
            JoinedRoom(
                r["room"],
                offset if type(offset) is int else None,
                r.get("epoch") if isinstance(r.get("epoch"), str) else None,
                r.get("recovered") if isinstance(r.get("recovered"), bool) else None,
            )
        )
    refused = [
        RefusedRoom(r["room"], r["reason"])
        for r in (d.get("refused") if isinstance(d.get("refused"), list) else [])
        if isinstance(r, dict) and isinstance(r.get("room"), str) and isinstance(r.get("reason"), str)
    ]
    return JoinResult(rooms, refused)


def _server_error(data: Any) -> SealcastError:
    m = data.get("message") if isinstance(data, dict) else None
    return SealcastError("SERVER_ERROR", "server error", server_message=m if isinstance(m, str) else None)


class _Attempt:
    """One connection attempt: its socket, session and the answers it still owes."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session: wsenc.Session | None = None
        self.open = False
        self.joins: deque[asyncio.Future[JoinResult] | None] = deque()
        self.publishes: dict[str, asyncio.Future[Ack]] = {}
        self.presences: deque[asyncio.Future[Presence]] = deque()
        self.epoch_started = time.monotonic()

    def fail_pending(self) -> None:
        gone = SealcastError("NOT_CONNECTED", "the session ended before the server answered")
        for f in [*self.joins, *self.publishes.values(), *self.presences]:
            if f is not None and not f.done():
                f.set_exception(gone)
        self.joins.clear()
        self.publishes.clear()
        self.presences.clear()


class Client:
    """A sealcast client. Create it, ``await start()`` (or use ``connect(...)`` / ``async with``), then ``join``,
    ``publish``, ``send`` and ``recv``. Tokens, keys and message bodies never appear in its ``repr`` or errors.

    Options (defaults in brackets): ``token`` or ``get_token`` (an async or plain callable giving a fresh token:
    used when there is none and once after a credentials close, 1008/4003); ``server_keys``: the pinned
    ``ServerKey`` list, the first one preferred; ``require_encryption`` [True]: ``False`` without keys makes a
    plaintext client; ``auth``: extra ``authenticate`` fields; ``reconnect`` [True] with ``backoff_initial``
    [0.5 s] and ``backoff_max`` [30 s] (exponential with jitter); ``heartbeat`` [30 s, 0 disables];
    ``handshake_timeout`` [15 s]; ``max_records_per_epoch`` [2^20]; ``pad_bucket`` [1, off];
    ``max_message_size`` [1 MiB, inbound]; ``max_pending`` [10,000 received messages not yet taken by ``recv``:
    beyond, reading pauses, and a server then closes the slow consumer 4007].
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: Callable[[], str | Awaitable[str]] | None = None,
        server_keys: Iterable[wsenc.ServerKey | dict[str, str]] | None = None,
        require_encryption: bool = True,
        auth: dict[str, Any] | None = None,
        reconnect: bool = True,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        heartbeat: float = 30.0,
        handshake_timeout: float = 15.0,
        max_records_per_epoch: int = wsenc.MAX_RECORDS_PER_EPOCH,
        pad_bucket: int = 1,
        max_message_size: int = 1 << 20,
        max_pending: int = 10_000,
    ) -> None:
        self._url = url
        self._token = token
        self._get_token = get_token
        self._pinned = wsenc.resolve_server_keys(server_keys) if server_keys else None
        if self._pinned is None and require_encryption:
            raise SealcastError("CONFIG", "require_encryption needs server_keys", fatal=True)
        if not 1 <= max_records_per_epoch <= wsenc.MAX_RECORDS_PER_EPOCH:
            raise SealcastError("CONFIG", "max_records_per_epoch must be in 1..2^20", fatal=True)
        self._auth = dict(auth or {})
        self._reconnect = reconnect
        self._backoff = (backoff_initial, backoff_max)
        self._heartbeat = heartbeat
        self._handshake_timeout = handshake_timeout
        self._max_records = max_records_per_epoch
        self._pad_bucket = pad_bucket
        self._max_message_size = max_message_size
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(max_pending)
        self._listeners: dict[str, list[Callable[..., None]]] = {}
        self._extensions: list[Extension] = []
        self._rooms: set[str] = set()
        self._positions: dict[str, StreamPosition] = {}
        self._state = "idle"
        self._info: ConnectedInfo | None = None
        self._attempt: _Attempt | None = None
        self._write_lock = asyncio.Lock()
        self._opened = asyncio.Event()
        self._closed = asyncio.Event()
        self._close_error: SealcastError | None = None
        self._runner: asyncio.Task[None] | None = None
        self._publish_ids = 0
        self._failures = 0
        self._need_fresh_token = False
        self._retried_with_fresh_token = False
        #: Tests only: called with ("in" | "out", frame text) for every WebSocket frame.
        self._tap: Callable[[str, str], None] | None = None
        self._handshake_error: SealcastError | None = None

    def __repr__(self) -> str:
        return f"Client(url={self._url!r}, state={self._state!r})"

    # ------------------------------------------------------------------ public API

    @property
    def state(self) -> str:
        """``idle``, ``connecting``, ``open``, ``reconnecting`` or ``closed``."""
        return self._state

    @property
    def info(self) -> ConnectedInfo | None:
        """The current (or last) session's ``ConnectedInfo``."""
        return self._info

    def on(self, event: str, fn: Callable[..., None]) -> None:
        """Lifecycle callbacks: ``connected(info)``, ``close(code, error)``, ``error(err)``,
        ``reconnecting(attempt, delay)``, ``rejoined(result)`` (a reconnect joined the rooms again; per room with
        history ``recovered`` says whether every missed message was delivered: they come before it)."""
        if event not in LIFECYCLE:
            raise SealcastError("CONFIG", f"unknown lifecycle event {event!r}")
        self._listeners.setdefault(event, []).append(fn)

    def add_extension(self, extension: Extension) -> None:
        """Plug in a protocol extension (see ``Extension``), e.g. presence."""
        self._extensions.append(extension)

    async def start(self) -> ConnectedInfo:
        """Start connecting (and reconnecting) in the background; returns once the first session is up."""
        if self._runner is None:
            self._state = "connecting"
            self._runner = asyncio.create_task(self._run())
        return await self.ready()

    async def ready(self) -> ConnectedInfo:
        """Wait until a session is open; raises once the client is closed for good."""
        while True:
            if self._state == "open" and self._info is not None:
                return self._info
            if self._state == "closed":
                raise self._close_error or SealcastError("NOT_CONNECTED", "client is closed")
            await _wait_any(self._opened, self._closed)

    async def send(self, event: str, data: Any = None) -> None:
        """A custom event ``{"event": E, "data": D}`` (waits for a session)."""
        if not isinstance(event, str) or not event or event in NOT_SENDABLE:
            raise SealcastError("CONFIG", "event name not allowed")
        await self.send_raw({"event": event} if data is None else {"event": event, "data": data})

    async def publish(self, room: str, event: str, data: Any = None, *, id: str | None = None) -> Ack:
        """Publish to a room and wait for the server's ``ack`` (raises ``SERVER_ERROR`` if refused, or
        ``NOT_CONNECTED`` if the session ended first: publish again with the same ``id``, at most 64 bytes, and
        the server delivers it once per user, room and id within its history TTL)."""
        if id is None:
            self._publish_ids += 1
            id = f"p{self._publish_ids}"
        if not isinstance(id, str) or not 1 <= len(id.encode()) <= 64:
            raise SealcastError("CONFIG", "publish id must be 1 to 64 bytes")
        msg = {"event": "publish", "data": {"room": room, "event": event, "data": data}, "id": id}
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        await self._send_then_wait(msg, lambda a: a.publishes.__setitem__(id, fut), fut)
        return fut.result()

    async def join(self, rooms: str | Iterable[str], *, recover: dict[str, StreamPosition] | None = None) -> JoinResult:
        """Join rooms and wait for the ``joined`` answer. Joined rooms are re-joined after every reconnect,
        recovering what was missed in rooms with history. ``recover`` asks for the messages after a position."""
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        data: dict[str, Any] = {"rooms": names}
        if recover:
            data["recover"] = {r: {"offset": p.offset, "epoch": p.epoch} for r, p in recover.items()}
        fut: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()

        def register(a: _Attempt) -> None:
            self._rooms.update(names)
            a.joins.append(fut)

        await self._send_then_wait({"event": "join", "data": data}, register, fut)
        return fut.result()

    async def presence(self, room: str) -> Presence:
        """Who is in a joined room that keeps presence (the server's ``presence.rooms``). Raises ``SERVER_ERROR``
        (``Not a member of room``, ``Presence not enabled for room``, ``Presence unavailable``) or
        ``NOT_CONNECTED`` if the session ended first. While the room is small enough, its members' joins and leaves
        arrive from ``recv()`` as messages ``member_joined`` / ``member_left`` with data ``{room, client, user}``."""
        fut: asyncio.Future[Presence] = asyncio.get_running_loop().create_future()
        msg = {"event": "presence", "data": {"room": room}}
        await self._send_then_wait(msg, lambda a: a.presences.append(fut), fut)
        return fut.result()

    async def leave(self, rooms: str | Iterable[str]) -> None:
        """Leave rooms (and forget their positions)."""
        names = [rooms] if isinstance(rooms, str) else list(rooms)
        for r in names:
            self._rooms.discard(r)
            self._positions.pop(r, None)
        await self._send_when_open({"event": "leave", "data": {"rooms": names}}, lambda a: None)

    def position(self, room: str) -> StreamPosition | None:
        """The last position received in a joined room with history (what a reconnect recovers from)."""
        return self._positions.get(room)

    async def recv(self) -> Message:
        """The next application message; raises ``NOT_CONNECTED`` once the client is closed and all were taken."""
        while True:
            if not self._inbox.empty():
                return self._inbox.get_nowait()
            if self._state == "closed":
                raise SealcastError("NOT_CONNECTED", "client is closed")
            getter = asyncio.ensure_future(self._inbox.get())
            closer = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait({getter, closer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closer.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                return getter.result()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.recv()
            except SealcastError:
                return

    async def update_keys(self) -> None:
        """Send a ``key_update`` now (encrypted sessions): later records use the next epoch's keys."""
        async with self._write_lock:
            a = self._attempt
            if a is None or not a.open or a.session is None:
                raise SealcastError("NOT_CONNECTED", "not connected")
            await self._write(a, [a.session.sealer.update_keys()])
            a.epoch_started = time.monotonic()

    async def send_raw(self, message: dict[str, Any]) -> None:
        """Send one inner message as it is (for extensions; applications use ``send``/``publish``/``join``)."""
        await self._send_when_open(message, lambda a: None)

    async def close(self) -> None:
        """Close for good (no reconnect)."""
        if self._state == "closed":
            return
        self._final(CloseCode.NORMAL, None)
        a = self._attempt
        if a is not None:
            with contextlib.suppress(Exception):
                await a.ws.close(CloseCode.NORMAL)
        if self._runner is not None and self._runner is not asyncio.current_task():
            self._runner.cancel()
            with contextlib.suppress(BaseException):
                await self._runner

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ internals

    def _emit(self, event: str, *args: Any) -> None:
        for fn in list(self._listeners.get(event, ())):
            try:
                fn(*args)
            except Exception:  # a listener's bug must not kill the connection
                pass

    async def _send_when_open(self, msg: dict[str, Any], register: Callable[[_Attempt], None]) -> None:
        """Waits for a session, then (under the write lock, so answers are awaited in wire order) registers what
        the message's answer resolves and sends it. A session that ends in between is waited out."""
        while True:
            await self.ready()
            async with self._write_lock:
                a = self._attempt
                if a is None or not a.open:
                    continue
                register(a)
                await self._write(a, self._seal(a, msg))
                return

    async def _send_then_wait(
        self, msg: dict[str, Any], register: Callable[[_Attempt], None], fut: asyncio.Future[Any]
    ) -> None:
        """Sends ``msg`` and waits for the answer ``register`` hooked ``fut`` up to; if sending fails the future
        is settled here, so an answer that can no longer come never lingers."""
        try:
            await self._send_when_open(msg, register)
        except BaseException:
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled():
                fut.exception()  # retrieved: the send's own error is the one raised
            raise
        await asyncio.wait({fut})

    def _seal(self, a: _Attempt, msg: dict[str, Any]) -> list[str]:
        if a.session is None:
            return [json.dumps(msg, separators=(",", ":"), ensure_ascii=False)]
        return a.session.sealer.seal(msg)

    async def _write(self, a: _Attempt, frames: list[str]) -> None:
        for f in frames:
            if self._tap is not None:
                self._tap("out", f)
            try:
                await a.ws.send(f)
            except ConnectionClosed:
                raise SealcastError("NOT_CONNECTED", "not connected") from None

    async def _fresh_token(self) -> str:
        try:
            t = self._get_token() if self._get_token else None
            if asyncio.iscoroutine(t) or isinstance(t, asyncio.Future):
                t = await t
        except Exception:
            t = None
        if not isinstance(t, str) or not t:
            raise SealcastError("TOKEN_UNAVAILABLE", "get_token did not provide a token", fatal=True)
        return t

    async def _run(self) -> None:
        while self._state != "closed":
            code, err = await self._one_attempt()
            if self._state == "closed":
                return
            decision = reconnect_policy(code, self._get_token is not None, self._retried_with_fresh_token)
            fatal = (err is not None and err.fatal) or decision == "stop" or not self._reconnect
            if fatal:
                self._final(code, err)
                return
            if decision == "fresh-token":
                self._need_fresh_token = True
                self._retried_with_fresh_token = True
            self._state = "reconnecting"
            self._emit("close", code, err)
            self._failures += 1
            initial, maximum = self._backoff
            base = min(maximum, initial * 2 ** min(self._failures - 1, 30))
            delay = base / 2 + random.random() * base / 2
            self._emit("reconnecting", self._failures, delay)
            await asyncio.sleep(delay)
            if self._state == "reconnecting":
                self._state = "connecting"

    async def _one_attempt(self) -> tuple[int, SealcastError | None]:
        """One connection: handshake, then read until it ends. Returns the close code and the client-side cause."""
        try:
            ephemeral = wsenc.generate_ephemeral() if self._pinned else None
            if self._get_token and (self._need_fresh_token or self._token is None):
                self._token = await self._fresh_token()
                self._need_fresh_token = False
        except SealcastError as e:
            self._emit("error", e)
            return CloseCode.ABNORMAL, e
        try:
            ws = await websockets.connect(
                self._url,
                max_size=self._max_message_size,
                open_timeout=self._handshake_timeout,
                compression=None,
                ping_interval=None,
            )
        except InvalidURI:
            return CloseCode.ABNORMAL, SealcastError("CONFIG", "invalid WebSocket URL", fatal=True)
        except (OSError, InvalidHandshake, asyncio.TimeoutError, TimeoutError):
            return CloseCode.ABNORMAL, None
        a = _Attempt(ws)
        self._attempt = a
        heartbeat: asyncio.Task[None] | None = None
        err: SealcastError | None = None
        try:
            await asyncio.wait_for(self._handshake(a, ephemeral), self._handshake_timeout)
            heartbeat = asyncio.create_task(self._heartbeats(a)) if self._heartbeat > 0 else None
            async for raw in ws:
                await self._on_frame(a, raw)
        except SealcastError as e:
            err = e
            self._emit("error", e)
        except (asyncio.TimeoutError, TimeoutError):
            err = SealcastError("PROTOCOL", "handshake timeout", close_code=CloseCode.AUTHENTICATION_TIMEOUT)
        except ConnectionClosed:
            pass
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            a.open = False
            self._opened.clear()
            if self._state == "open":
                self._state = "connecting"
            a.fail_pending()
            if a.session is not None:
                a.session.destroy()
        if err is not None and err.close_code is not None:
            with contextlib.suppress(Exception):
                await ws.close(err.close_code if 3000 <= err.close_code <= 4999 else 1000)
            return err.close_code, err
        with contextlib.suppress(Exception):
            await ws.close()
        rcvd = ws.close_code
        return (rcvd if rcvd is not None else CloseCode.ABNORMAL), err

    async def _handshake(self, a: _Attempt, ephemeral: Any) -> None:
        data: dict[str, Any] = dict(self._auth)
        if self._token is not None:
            data["token"] = self._token
        if ephemeral is not None and self._pinned:
            data.update(wsenc.authenticate_fields(ephemeral, self._pinned[0]))
        await self._write(a, [json.dumps({"event": "authenticate", "data": data}, separators=(",", ":"))])
        while True:
            raw = await a.ws.recv()
            if self._tap is not None:
                self._tap("in", raw if isinstance(raw, str) else "<binary>")
            try:
                msg = json.loads(raw) if isinstance(raw, str) else None
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                raise SealcastError("PROTOCOL", "malformed handshake message", close_code=CloseCode.PROTOCOL_ERROR)
            if msg.get("event") == "error":
                self._handshake_error = _server_error(msg.get("data"))
                self._emit("error", self._handshake_error)
                continue
            d = msg.get("data")
            if msg.get("event") != "connected" or not isinstance(d, dict):
                raise SealcastError("PROTOCOL", "unexpected handshake message", close_code=CloseCode.PROTOCOL_ERROR)
            break
        if ephemeral is not None and self._pinned:
            a.session = wsenc.client_handshake(
                ephemeral, self._pinned, d, max_records_per_epoch=self._max_records, pad_bucket=self._pad_bucket
            )
            info = ConnectedInfo(a.session.conn_id, a.session.user_id, str(d.get("time", "")), True, a.session.kid)
        else:
            if "serverPublicKey" in d and not isinstance(d.get("id"), str):
                raise downgrade()
            if not isinstance(d.get("id"), str):
                raise SealcastError("PROTOCOL", "malformed connected message", close_code=CloseCode.PROTOCOL_ERROR)
            info = ConnectedInfo(d["id"], str(d.get("userId", "")), str(d.get("time", "")), False)
        # Re-join remembered rooms, recovering rooms with history from their last position; then open.
        async with self._write_lock:
            if self._rooms:
                rooms = sorted(self._rooms)
                recover = {r: self._positions[r] for r in rooms if r in self._positions}
                join: dict[str, Any] = {"rooms": rooms}
                if recover:
                    join["recover"] = {r: {"offset": p.offset, "epoch": p.epoch} for r, p in recover.items()}
                a.joins.append(None)
                await self._write(a, self._seal(a, {"event": "join", "data": join}))
            a.open = True
        if not self._retried_with_fresh_token:
            self._failures = 0
        self._retried_with_fresh_token = False
        self._info = info
        self._handshake_error = None
        self._state = "open"
        self._opened.set()
        self._emit("connected", info)
        for ext in self._extensions:
            asyncio.create_task(ext.on_connected(self))

    async def _heartbeats(self, a: _Attempt) -> None:
        while a.open:
            await asyncio.sleep(self._heartbeat)
            with contextlib.suppress(SealcastError):
                if a.session is not None and time.monotonic() - a.epoch_started >= MAX_EPOCH_SECONDS:
                    await self.update_keys()
                async with self._write_lock:
                    if a.open:
                        await self._write(a, self._seal(a, {"event": "heartbeat"}))

    async def _on_frame(self, a: _Attempt, raw: str | bytes) -> None:
        if self._tap is not None:
            self._tap("in", raw if isinstance(raw, str) else "<binary>")
        if a.session is not None:
            msg = a.session.opener.open_frame(raw)
            if msg is None:
                return
        else:
            try:
                msg = json.loads(raw) if isinstance(raw, str) else None
            except ValueError:
                return
            if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
                return
        await self._dispatch(a, msg)

    async def _dispatch(self, a: _Attempt, msg: dict[str, Any]) -> None:
        event, data = msg["event"], msg.get("data")
        if event in ("heartbeat", "key_update"):
            return
        if event == "error":
            pending = a.publishes.pop(data.get("id"), None) if isinstance(data, dict) else None
            err = _server_error(data)
            if pending is None and err.server_message in PRESENCE_ERRORS and a.presences:
                pending = a.presences.popleft()
            if pending is not None and not pending.done():
                pending.set_exception(err)
            else:
                self._emit("error", err)
            return
        if event == "ack":
            pending = a.publishes.pop(data.get("id"), None) if isinstance(data, dict) else None
            if pending is not None and not pending.done():
                offset = data.get("offset")
                epoch = data.get("epoch")
                pending.set_result(
                    Ack(data["id"], offset if type(offset) is int else None, epoch if isinstance(epoch, str) else None)
                )
            return
        if event == "presence":
            waiter = a.presences.popleft() if a.presences else None
            if waiter is not None and not waiter.done():
                waiter.set_result(_presence(data))
            return
        if event == "joined":
            result = _join_result(data)
            self._track(result)
            waiter = a.joins.popleft() if a.joins else None
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(result)
            else:
                self._emit("rejoined", result)
            return
        for ext in self._extensions:
            if event in ext.events:
                ext.on_message(self, msg)
                return
        room, offset, epoch = msg.get("room"), msg.get("offset"), msg.get("epoch")
        if isinstance(room, str) and type(offset) is int and isinstance(epoch, str):
            if room in self._rooms and (room in self._positions or len(self._positions) < MAX_TRACKED_ROOMS):
                self._positions[room] = StreamPosition(offset, epoch)
            await self._inbox.put(Message(event, data, room, offset, epoch))
        else:
            await self._inbox.put(Message(event, data))

    def _track(self, result: JoinResult) -> None:
        """Rooms not recovered continue from the position the server reports now."""
        for r in result.rooms:
            if r.recovered is True or r.offset is None or r.epoch is None:
                continue
            if r.room in self._positions or len(self._positions) < MAX_TRACKED_ROOMS:
                self._positions[r.room] = StreamPosition(r.offset, r.epoch)

    def _final(self, code: int, err: SealcastError | None) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        self._close_error = err or self._handshake_error
        self._closed.set()
        self._emit("close", code, err)


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def connect(url: str, **options: Any) -> Client:
    """Create a ``Client`` (options as its constructor's) and wait for its first session."""
    client = Client(url, **options)
    try:
        await client.start()
    except BaseException:
        await client.close()
        raise
    return client

"""Helpers for the live tests: the real ``sealcast`` binary (SEALCAST_BIN, as scripts/test.sh sets it) on a free
port of 127.0.0.1, with the dev-mode key and token it prints; HS256 tokens signed here with a test secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

BIN = os.environ.get("SEALCAST_BIN")
TEST_SECRET = "python-client-test-secret-0123456789abcdef"


def require_binary() -> str:
    if BIN:
        return BIN
    if os.environ.get("SEALCAST_LIVE_REQUIRED") == "1":
        pytest.fail("SEALCAST_LIVE_REQUIRED=1 but SEALCAST_BIN is not set")
    pytest.skip("SEALCAST_BIN is not set: cargo build, then SEALCAST_BIN=target/debug/sealcast")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALCAST_")}
    env.update({"SEALCAST_LOG": "warn", "SEALCAST_ADMIN_BIND": "off"})
    env.update(extra)
    return env


def _after(line: str, prefix: str) -> str | None:
    i = line.find(prefix)
    return line[i + len(prefix) :].split()[0] if i >= 0 else None


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def find(self, prefix: str) -> str | None:
        return next((v for v in (_after(l, prefix) for l in list(self.lines)) if v is not None), None)

    @property
    def kid(self) -> str:
        return self.find("kid=")

    @property
    def public_key(self) -> str:
        return self.find("publicKey=")

    @property
    def keys(self) -> list[dict[str, str]]:
        return [{"kid": self.kid, "publicKey": self.public_key}]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(env: dict[str, str] | None = None, port: int | None = None) -> Server:
    """``sealcast serve`` with the test secret and ``env``; returns once it printed "listening on"."""
    port = port or free_port()
    full = {"SEALCAST_BIND": f"127.0.0.1:{port}", "SEALCAST_JWT_SECRET": TEST_SECRET, **(env or {})}
    proc = subprocess.Popen(
        [require_binary(), "serve"],
        env=clean_env(full),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(proc, port)
    ready = threading.Event()

    def drain() -> None:  # keep reading so the server never blocks on a full pipe
        for line in proc.stdout:
            if len(server.lines) < 500:
                server.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 20
    while not ready.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("server did not start:\n" + "\n".join(server.lines))
    return server


def sign_token(sub: str, ttl: int = 600, secret: str = TEST_SECRET, **claims: object) -> str:
    """An HS256 JWT for ``sub`` signed with the test secret."""

    def part(o: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(o).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': sub, 'iat': now, 'exp': now + ttl, **claims})}"
    sig = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.fixture
def servers():
    """Starts servers with ``servers(env)``; stops them all after the test."""
    started: list[Server] = []

    def start(env: dict[str, str] | None = None, port: int | None = None) -> Server:
        s = start_server(env, port)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()

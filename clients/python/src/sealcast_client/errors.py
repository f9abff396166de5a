"""The client's one exception type, the close codes (wsenc/1 spec §9) and the reconnect policy."""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """WebSocket close codes a sealcast server uses (docs/spec/wsenc1.md §9)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    ABNORMAL = 1006
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    AUTHENTICATION_TIMEOUT = 4001
    HEARTBEAT_TIMEOUT = 4002
    AUTHENTICATION_FAILED = 4003
    ENCRYPTION_REQUIRED = 4004
    DECRYPTION_FAILED = 4005
    KEY_EXHAUSTED = 4006
    SLOW_CONSUMER = 4007
    RATE_LIMITED = 4008


#: Closes after which reconnecting cannot help (the server refuses this client's encryption).
FATAL_CLOSE_CODES = frozenset({CloseCode.ENCRYPTION_REQUIRED})
#: Closes caused by the credentials: one retry with a fresh token from ``get_token``, never a blind one.
CREDENTIAL_CLOSE_CODES = frozenset({CloseCode.POLICY_VIOLATION, CloseCode.AUTHENTICATION_FAILED})


def reconnect_policy(code: int, has_get_token: bool, retried_with_fresh_token: bool = False) -> str:
    """What to do after a close with ``code``: ``"reconnect"``, ``"fresh-token"`` or ``"stop"``."""
    if code in FATAL_CLOSE_CODES:
        return "stop"
    if code in CREDENTIAL_CLOSE_CODES:
        return "fresh-token" if has_get_token and not retried_with_fresh_token else "stop"
    return "reconnect"


class SealcastError(Exception):
    """Every error this library raises.

    ``code`` is machine-readable: ``CONFIG``, ``PROTOCOL``, ``DOWNGRADE``, ``SERVER_AUTH_FAILED``,
    ``DECRYPTION_FAILED``, ``KEY_EXHAUSTED``, ``NOT_CONNECTED``, ``TOKEN_UNAVAILABLE`` or ``SERVER_ERROR``.
    ``close_code`` is the WebSocket close code the client uses for it, if any; ``server_message`` is the text of a
    server ``error`` event. Messages never contain tokens, keys or message bodies.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        close_code: int | None = None,
        fatal: bool = False,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code
        self.fatal = fatal
        self.server_message = server_message

    def __repr__(self) -> str:
        return f"SealcastError({self.code!r}, {str(self)!r}, server_message={self.server_message!r})"


def decryption_failed() -> SealcastError:
    """A record-layer failure (spec §6): close 4005, no detail."""
    return SealcastError("DECRYPTION_FAILED", "decryption failed", close_code=CloseCode.DECRYPTION_FAILED)


def key_exhausted() -> SealcastError:
    """A sequence number or epoch over its limit (spec §7): close 4006."""
    return SealcastError("KEY_EXHAUSTED", "key exhausted", close_code=CloseCode.KEY_EXHAUSTED)


def server_auth_failed() -> SealcastError:
    """Unknown kid, bad server key or a wrong ``confirm``: fatal, nothing encrypted is sent."""
    return SealcastError(
        "SERVER_AUTH_FAILED", "server authentication failed", close_code=CloseCode.ENCRYPTION_REQUIRED, fatal=True
    )


def downgrade(message: str = "the server did not provide encryption") -> SealcastError:
    """A plaintext frame where a record was due, or a ``connected`` without the crypto fields: fatal."""
    return SealcastError("DOWNGRADE", message, close_code=CloseCode.ENCRYPTION_REQUIRED, fatal=True)

"""sealcast client for Python (asyncio): authenticate, wsenc/1 with pinned server keys, rooms, publish with
acknowledgements, join results, presence and automatic recovery of rooms with history after a reconnect.

>>> client = await sealcast_client.connect(url, token=token, server_keys=[ServerKey(kid, public_key)])
"""

from .client import (
    Ack,
    Client,
    ConnectedInfo,
    Extension,
    JoinResult,
    Member,
    Message,
    Presence,
    StreamPosition,
    connect,
)
from .errors import CloseCode, SealcastError, reconnect_policy
from .wsenc import MAX_RECORDS_PER_EPOCH, ServerKey

__all__ = [
    "Ack",
    "Client",
    "CloseCode",
    "ConnectedInfo",
    "Extension",
    "JoinResult",
    "Member",
    "MAX_RECORDS_PER_EPOCH",
    "Message",
    "Presence",
    "SealcastError",
    "ServerKey",
    "StreamPosition",
    "connect",
    "reconnect_policy",
]
__version__ = "0.1.0"

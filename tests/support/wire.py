"""A WebSocket test client that validates every frame the server sends.

Each received frame is checked against the protocol's JSON Schemas with the
official client's ``ProtocolValidator``; a frame that does not validate fails
the test at the point it arrived.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import websockets

REPO = Path(__file__).resolve().parents[2]


def spec_dir() -> Path:
    """Return the protocol spec folder: $SMOOTH_NB_SPEC_DIR, or ../shared/protocol/spec beside the repo."""
    configured = os.environ.get("SMOOTH_NB_SPEC_DIR")
    path = Path(configured) if configured else REPO.parent / "shared" / "protocol" / "spec"
    if not (path / "envelope.schema.json").is_file():
        raise RuntimeError(
            f"protocol spec not found at {path}; set SMOOTH_NB_SPEC_DIR to the folder holding envelope.schema.json"
        )
    return path


@lru_cache(maxsize=1)
def validator() -> Any:
    from smooth_operator import ProtocolValidator

    return ProtocolValidator.load(spec_dir())


def assert_valid_event(frame: dict[str, Any]) -> None:
    result = validator().validate_event(frame)
    assert result.valid, f"frame does not match the schema: {result.errors}\n{json.dumps(frame)[:2000]}"


AGENT_ID = "11111111-1111-4111-8111-111111111111"


class WireClient:
    """One WebSocket to the server; every received frame is schema-checked and kept."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.received: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WireClient:
        return cls(await websockets.connect(url, max_size=None, **kwargs))

    async def close(self) -> None:
        await self.socket.close()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.socket.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0, *, skip_keepalive: bool = True) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.socket.recv(), timeout)
            frame = json.loads(raw)
            assert_valid_event(frame)
            self.received.append(frame)
            if skip_keepalive and frame.get("type") == "keepalive":
                continue
            return frame

    async def expect_silence(self, seconds: float = 0.3) -> None:
        try:
            frame = await asyncio.wait_for(self.socket.recv(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected no frame, got {frame}")

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        frame = {"requestId": str(uuid.uuid4()), **frame}
        await self.send(frame)
        return await self.recv()

    async def create_session(self, **fields: Any) -> str:
        reply = await self.request({"action": "create_conversation_session", "agentId": AGENT_ID, **fields})
        assert reply["type"] == "immediate_response", reply
        return reply["data"]["sessionId"]

    async def turn(self, session_id: str, message: str, **fields: Any) -> list[dict[str, Any]]:
        """Send a message and return every frame up to and including the terminal one."""
        request_id = fields.pop("requestId", str(uuid.uuid4()))
        await self.send({"action": "send_message", "requestId": request_id, "sessionId": session_id, "message": message, **fields})
        frames = []
        while True:
            frame = await self.recv(timeout=30)
            frames.append(frame)
            if frame.get("type") in ("eventual_response", "cancelled", "error"):
                return frames


def tokens(frames: list[dict[str, Any]]) -> str:
    return "".join(f["token"] for f in frames if f["type"] == "stream_token")

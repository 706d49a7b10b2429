"""Drive turns from Python over the real WebSocket protocol.

``chat = srv.session()`` opens nothing yet; the first ``await chat.send(...)``
connects to the server's ``/ws``, creates the session and runs the turn, so the
notebook sees exactly the frames any other client sees.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

#: Default upper bound on one turn, in seconds.
DEFAULT_TURN_TIMEOUT = 120.0

_TERMINAL = frozenset({"eventual_response", "cancelled", "error"})


class TurnError(Exception):
    """The server ended a request with an ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Event:
    """One frame the server sent, with its arrival time in seconds since the send."""

    at: float
    frame: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.frame.get("type"))


@dataclass
class ToolCall:
    name: str
    arguments: Any
    result: str | None = None
    is_error: bool = False
    started: float = 0.0
    finished: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


@dataclass
class Turn:
    """Everything one ``send_message`` produced, in arrival order."""

    request_id: str
    message: str
    events: list[Event] = field(default_factory=list)
    text: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: dict[str, str] | None = None
    status: str = "running"
    ttft: float | None = None
    duration: float | None = None

    def _record(self, at: float, frame: dict[str, Any]) -> None:
        self.events.append(Event(at, frame))
        kind = frame.get("type")
        data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
        if kind == "stream_token":
            if self.ttft is None:
                self.ttft = at
            self.text += str(frame.get("token", ""))
        elif kind == "stream_chunk":
            raw = (data.get("state") or {}).get("rawResponse") or {}
            if "toolCall" in raw:
                call = raw["toolCall"]
                self.tool_calls.append(ToolCall(call.get("name", ""), call.get("arguments"), started=at))
            elif "toolResult" in raw:
                result = raw["toolResult"]
                pending = [c for c in self.tool_calls if c.name == result.get("name") and c.finished is None]
                if pending:
                    pending[0].result = result.get("content", result.get("result"))
                    pending[0].is_error = bool(result.get("isError"))
                    pending[0].finished = at
        elif kind == "eventual_response":
            payload = data.get("data") or {}
            parts = (payload.get("response") or {}).get("responseParts") or []
            self.text = "".join(parts) if parts else self.text
            self.citations = list(payload.get("citations") or [])
            self.usage = payload.get("usage")
            self.status = "done"
            self.duration = at
        elif kind == "cancelled":
            self.status = "cancelled"
            self.duration = at
        elif kind == "error":
            error = frame.get("error") or {}
            self.error = {"code": str(error.get("code")), "message": str(error.get("message"))}
            self.status = "error"
            self.duration = at

    def __repr__(self) -> str:
        lines = [f"Turn {self.request_id} [{self.status}] {self.message!r}"]
        for call in self.tool_calls:
            mark = "error" if call.is_error else "ok"
            lines.append(f"  tool {call.name}({json.dumps(call.arguments, ensure_ascii=False)}) -> {mark}")
        if self.error:
            lines.append(f"  error {self.error['code']}: {self.error['message']}")
        lines.append(f"  text: {self.text!r}")
        for citation in self.citations:
            lines.append(f"  cited {citation.get('id')} (score {citation.get('score')})")
        timing = f"ttft {_ms(self.ttft)}, total {_ms(self.duration)}, {len(self.events)} events"
        if self.usage:
            timing += f", tokens {self.usage.get('promptTokens')} in / {self.usage.get('completionTokens')} out"
        lines.append("  " + timing)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for event in self.events:
            detail = _event_detail(event.frame)
            rows.append(
                f"<tr><td style='text-align:right;padding-right:8px'>{_ms(event.at)}</td>"
                f"<td><code>{html.escape(event.type)}</code></td><td>{html.escape(detail)}</td></tr>"
            )
        cited = ", ".join(html.escape(str(c.get("id"))) for c in self.citations) or "none"
        return (
            "<div style='font-size:12px'>"
            f"<div><strong>{html.escape(self.status)}</strong> · {html.escape(self.message)}</div>"
            f"<div style='white-space:pre-wrap;margin:4px 0'>{html.escape(self.text)}</div>"
            f"<div>citations: {cited} · ttft {_ms(self.ttft)} · total {_ms(self.duration)}</div>"
            "<details><summary>events</summary><table>" + "".join(rows) + "</table></details></div>"
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _event_detail(frame: dict[str, Any]) -> str:
    kind = frame.get("type")
    if kind == "stream_token":
        return repr(frame.get("token", ""))
    if kind == "error":
        error = frame.get("error") or {}
        return f"{error.get('code')}: {error.get('message')}"
    if kind == "stream_chunk":
        raw = ((frame.get("data") or {}).get("state") or {}).get("rawResponse") or {}
        return json.dumps(raw, ensure_ascii=False)[:200]
    return str(frame.get("status", ""))


class Chat:
    """One protocol session on a server, driven from Python."""

    def __init__(self, ws_url: str, token: str | None, create_fields: dict[str, Any]) -> None:
        self._url = ws_url if token is None else f"{ws_url}?token={quote(token)}"
        self._create_fields = {"agentId": str(uuid.uuid4()), **create_fields}
        self._socket: Any = None
        self.session_id: str | None = None
        self.turns: list[Turn] = []

    async def _connect(self) -> None:
        if self._socket is not None:
            return
        from tornado.websocket import websocket_connect

        self._socket = await websocket_connect(self._url)
        response = await self._request({"action": "create_conversation_session", **self._create_fields})
        self.session_id = response["data"]["sessionId"]

    async def _read(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self._socket.read_message(), timeout)
        if raw is None:
            self._socket = None
            raise ConnectionError("the server closed the connection; is it still running?")
        return json.loads(raw)

    async def _request(self, frame: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        await self._socket.write_message(json.dumps({**frame, "requestId": request_id}))
        while True:
            reply = await self._read(timeout)
            if reply.get("requestId") != request_id:
                continue
            if reply.get("type") == "error":
                error = reply.get("error") or {}
                raise TurnError(str(error.get("code")), str(error.get("message")))
            return reply

    async def send(self, message: str, *, timeout: float = DEFAULT_TURN_TIMEOUT, **fields: Any) -> Turn:
        """Send one message and wait for the turn's terminal event.

        Returns the :class:`Turn` whatever way it ended; an ``error`` event is in
        ``turn.error`` rather than raised, so a failing turn can still be inspected.
        """
        await self._connect()
        turn = Turn(request_id=str(uuid.uuid4()), message=message)
        self.turns.append(turn)
        frame = {"action": "send_message", "requestId": turn.request_id, "sessionId": self.session_id, "message": message}
        started = time.perf_counter()
        await self._socket.write_message(json.dumps({**frame, **fields}))
        deadline = started + timeout
        while turn.status == "running":
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"turn {turn.request_id} got no terminal event within {timeout} s")
            reply = await self._read(remaining)
            if reply.get("requestId") != turn.request_id:
                continue
            turn._record(time.perf_counter() - started, reply)
        return turn

    async def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

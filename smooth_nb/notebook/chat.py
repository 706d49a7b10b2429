"""Drive turns from Python over the real WebSocket protocol.

``chat = srv.session()`` opens nothing yet; the first ``await chat.send(...)``
connects to the server's ``/ws``, creates the session and runs the turn, so the
notebook sees exactly the frames any other client sees. ``send`` returns when
the turn ends or parks; ``confirm`` and ``submit`` resume a parked turn.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from smooth_nb.notebook.turn import TERMINAL, Turn

if TYPE_CHECKING:
    from smooth_nb.notebook.handle import NotebookServer

#: Default upper bound on waiting for a turn to end or park, in seconds.
DEFAULT_TURN_TIMEOUT = 120.0


class ProtocolError(Exception):
    """An ``error`` event the server sent in reply to a request."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Frames:
    """The frames and actions of one turn, timed from its send."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.actions: list[tuple[float, dict[str, Any]]] = []

    def now(self) -> float:
        return time.perf_counter() - self.started


class Chat:
    """One protocol session on a server, driven from Python."""

    def __init__(self, ws_url: str, token: str | None, create_fields: dict[str, Any], *, server: NotebookServer | None = None) -> None:
        self._url = ws_url if token is None else f"{ws_url}?token={quote(token)}"
        self.create_fields = {"agentId": str(uuid.uuid4()), **create_fields}
        self._server = server
        self._socket: Any = None
        self._lock = asyncio.Lock()
        self.session_id: str | None = None
        self.turns: list[Turn] = []
        self._frames: dict[str, _Frames] = {}

    def __repr__(self) -> str:
        state = "connected" if self._socket is not None else "not connected"
        return f"<Chat session={self.session_id} {state}, {len(self.turns)} turns>"

    # -- connection ----------------------------------------------------------------

    async def connect(self) -> str:
        """Open the socket and create the session, if not done yet; return the session id."""
        if self._socket is None:
            from tornado.websocket import websocket_connect

            try:
                self._socket = await websocket_connect(self._url)
            except OSError as exc:
                raise ConnectionError(
                    f"cannot connect to the server ({exc.strerror or exc}); is it still running? (%smooth_local status)"
                ) from None
            reply = await self._request({"action": "create_conversation_session", **self.create_fields})
            self.session_id = reply["data"]["sessionId"]
        assert self.session_id is not None
        return self.session_id

    async def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _read(self, timeout: float) -> dict[str, Any]:
        raw = await asyncio.wait_for(self._socket.read_message(), timeout)
        if raw is None:
            self._socket = None
            raise ConnectionError("the server closed the connection; is it still running? (%smooth_local status)")
        return json.loads(raw)

    async def _write(self, frame: dict[str, Any]) -> None:
        from tornado.websocket import WebSocketClosedError

        if self._socket is None:
            raise ConnectionError("this chat's connection is closed; is the server still running? (%smooth_local status)")
        try:
            await self._socket.write_message(json.dumps(frame, ensure_ascii=False))
        except WebSocketClosedError:
            self._socket = None
            raise ConnectionError("the server closed the connection; is it still running? (%smooth_local status)") from None

    async def _request(self, frame: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        await self._write({**frame, "requestId": request_id})
        while True:
            reply = await self._read(timeout)
            if reply.get("requestId") != request_id:
                continue
            if reply.get("type") == "error":
                error = reply.get("error") or {}
                raise ProtocolError(str(error.get("code")), str(error.get("message")))
            return reply

    # -- turns -----------------------------------------------------------------------

    def _new_turn(self, message: str) -> tuple[Turn, _Frames]:
        request_id = str(uuid.uuid4())
        frames = _Frames()
        self._frames[request_id] = frames
        turn = Turn(
            request_id,
            message,
            lambda: frames.frames,
            server=self._server,
            session_id=self.session_id,
            actions=lambda: frames.actions,
        )
        return turn, frames

    async def _follow(self, turn: Turn, frames: _Frames, timeout: float, *, since: int = 0) -> Turn:
        """Read frames until the turn ends or parks, having seen at least one frame after ``since``."""
        deadline = time.perf_counter() + timeout
        while True:
            arrived = frames.frames[since:]
            if any(f.get("type") in TERMINAL and f.get("requestId") == turn.request_id for _, f in arrived):
                return turn
            if turn.pending is not None and any(
                f.get("type") in ("write_confirmation_required", "interaction_required", "interaction_invalid")
                for _, f in arrived
            ):
                return turn
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(
                    f"turn {turn.request_id} neither ended nor parked within {timeout} s; "
                    "pass timeout= to wait longer, or await chat.cancel()"
                )
            reply = await self._read(remaining)
            if reply.get("type") == "keepalive":
                continue
            # A frame belongs to the turn its requestId names, so the error of a
            # rejected second send never lands in the turn being followed.
            owner = self._frames.get(str(reply.get("requestId")), frames)
            owner.frames.append((owner.now(), reply))

    async def send(self, message: str, *, timeout: float = DEFAULT_TURN_TIMEOUT, **fields: Any) -> Turn:
        """Send one message; return the :class:`Turn` once it ends or parks.

        An ``error`` event ends the turn and is kept in ``turn.error`` rather
        than raised, so a failed turn can still be inspected. Extra ``fields``
        go into the ``send_message`` frame (``stream``, ``model``...).
        """
        async with self._lock:
            await self.connect()
            turn, frames = self._new_turn(message)
            turn.session_id = self.session_id
            self.turns.append(turn)
            frame = {"action": "send_message", "requestId": turn.request_id, "sessionId": self.session_id, "message": message}
            frames.started = time.perf_counter()
            await self._write({**frame, **fields})
            return await self._follow(turn, frames, timeout)

    def _parked(self, kind: str) -> tuple[Turn, _Frames]:
        for turn in reversed(self.turns):
            pending = turn.pending
            if pending is not None and pending["kind"] == kind:
                return turn, self._frames[turn.request_id]
        raise RuntimeError(f"no turn of this chat is waiting for {kind}; check turn.pending")

    async def _resume(self, kind: str, action: dict[str, Any], timeout: float) -> Turn:
        async with self._lock:
            turn, frames = self._parked(kind)
            frame = {**action, "requestId": turn.request_id, "sessionId": self.session_id}
            frames.actions.append((frames.now(), frame))
            since = len(frames.frames)
            await self._write(frame)
            return await self._follow(turn, frames, timeout, since=since)

    async def confirm(self, approved: bool = True, *, timeout: float = DEFAULT_TURN_TIMEOUT) -> Turn:
        """Approve (or deny) the tool the parked turn waits on; return the turn when it ends or parks again."""
        return await self._resume("confirmation", {"action": "confirm_tool_action", "approved": bool(approved)}, timeout)

    async def submit(
        self, values: dict[str, Any] | None = None, *, declined: bool = False, timeout: float = DEFAULT_TURN_TIMEOUT
    ) -> Turn:
        """Submit ``values`` for the parked interaction (or decline it).

        Invalid values leave the turn parked; ``turn.pending["errors"]`` lists the problems.
        """
        turn, _ = self._parked("interaction")
        action: dict[str, Any] = {"action": "submit_interaction", "interactionId": turn.pending["interaction_id"]}
        if declined:
            action["declined"] = True
        else:
            if not isinstance(values, dict):
                raise TypeError("submit() needs a dict of values, or declined=True")
            action["values"] = values
        return await self._resume("interaction", action, timeout)

    async def cancel(self, *, timeout: float = 30.0) -> Turn | None:
        """Cancel the running or parked turn; return it once ``cancelled`` arrived, or None when none runs."""
        async with self._lock:
            open_turns = [t for t in self.turns if t.status in ("running", "parked")]
            if not open_turns or self._socket is None:
                return None
            turn = open_turns[-1]
            frames = self._frames[turn.request_id]
            frame = {"action": "cancel", "requestId": turn.request_id, "sessionId": self.session_id}
            frames.actions.append((frames.now(), frame))
            await self._write(frame)
            return await self._follow(turn, frames, timeout, since=len(frames.frames))

    def send_sync(self, message: str, **kwargs: Any) -> Turn:
        """Blocking :meth:`send`, for code that cannot ``await``.

        Inside a running loop (a notebook cell) this re-enters the loop, which
        needs nest-asyncio: it is applied here on first use, never at import.
        """
        return run_sync(self.send(message, **kwargs))

    def to_scenario(self, path: Any) -> dict[str, Any]:
        """Write every turn of this session as one conformance scenario file; return the scenario."""
        from smooth_nb.notebook.export import write_scenario

        return write_scenario(self.turns, path, server=self._server, create_fields=self.create_fields)


_nest_asyncio_applied = False


def run_sync(coroutine: Any) -> Any:
    """Run ``coroutine`` to completion from synchronous code, even inside a running loop."""
    global _nest_asyncio_applied
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    if not _nest_asyncio_applied:
        import nest_asyncio

        nest_asyncio.apply(loop)
        _nest_asyncio_applied = True
    return loop.run_until_complete(coroutine)

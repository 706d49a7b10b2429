"""A turn as the notebook sees it: every frame, and what they add up to.

A :class:`Turn` is a view over a list of frames, each with its time since the
turn started. Every property (``text``, ``tool_calls``, ``pending``...) is
computed from the frames when read, so a turn that is still running, or one
read from the server's live log, is always current.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smooth_nb.notebook.handle import NotebookServer

TERMINAL = frozenset({"eventual_response", "cancelled", "error"})


@dataclass(frozen=True)
class Event:
    """One frame the server sent, with its arrival time in seconds since the turn started."""

    at: float
    frame: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.frame.get("type"))


@dataclass
class ToolCall:
    """One tool the model called in the turn."""

    name: str
    arguments: Any
    result: str | None = None
    is_error: bool = False
    started: float = 0.0
    finished: float | None = None
    traceback: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from the call chunk to the result chunk (a parked confirmation included)."""
        return None if self.finished is None else self.finished - self.started


def _data(frame: dict[str, Any]) -> dict[str, Any]:
    data = frame.get("data")
    return data if isinstance(data, dict) else {}


class Turn:
    """One ``send_message`` and everything the server sent for it."""

    def __init__(
        self,
        request_id: str,
        message: str,
        frames: Callable[[], Sequence[tuple[float, dict[str, Any]]]],
        *,
        server: NotebookServer | None = None,
        session_id: str | None = None,
        actions: Callable[[], Sequence[tuple[float, dict[str, Any]]]] | None = None,
    ) -> None:
        self.request_id = request_id
        self.message = message
        self.session_id = session_id
        self._frames = frames
        self._actions = actions or (lambda: ())
        self._server = server

    # -- raw material -------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """Every frame of the turn, keepalives excluded, in arrival order."""
        return [Event(at, frame) for at, frame in self._frames() if frame.get("type") != "keepalive"]

    @property
    def actions(self) -> list[Event]:
        """The frames the client sent to steer the turn (confirm, submit, cancel)."""
        return [Event(at, frame) for at, frame in self._actions()]

    def _record(self) -> Any:
        if self._server is None:
            return None
        return self._server.handle.state.turn_log.get(self.request_id)

    # -- what the frames add up to ---------------------------------------------------

    @property
    def status(self) -> str:
        """``running``, ``parked``, ``done``, ``cancelled`` or ``error``."""
        for event in reversed(self.events):
            if event.type == "eventual_response":
                return "done"
            if event.type == "cancelled":
                return "cancelled"
            if event.type == "error" and event.frame.get("requestId") == self.request_id:
                return "error"
        return "parked" if self.pending is not None else "running"

    @property
    def text(self) -> str:
        streamed = ""
        for event in self.events:
            if event.type == "stream_token":
                streamed += str(event.frame.get("token", ""))
            elif event.type == "eventual_response":
                parts = (_data(event.frame).get("data") or {}).get("response", {}).get("responseParts") or []
                return "".join(parts) if parts else streamed
        return streamed

    def _final(self) -> dict[str, Any]:
        for event in self.events:
            if event.type == "eventual_response":
                return _data(event.frame).get("data") or {}
        return {}

    @property
    def citations(self) -> list[dict[str, Any]]:
        return list(self._final().get("citations") or [])

    @property
    def usage(self) -> dict[str, Any] | None:
        return self._final().get("usage")

    @property
    def error(self) -> dict[str, str] | None:
        for event in self.events:
            if event.type == "error":
                error = event.frame.get("error") or {}
                return {"code": str(error.get("code")), "message": str(error.get("message"))}
        return None

    @property
    def ttft(self) -> float | None:
        """Seconds from the send to the first streamed token."""
        return next((event.at for event in self.events if event.type == "stream_token"), None)

    @property
    def duration(self) -> float | None:
        """Seconds from the send to the terminal event, or None while the turn is open."""
        return next((event.at for event in self.events if event.type in TERMINAL and self._is_own(event)), None)

    def _is_own(self, event: Event) -> bool:
        return event.frame.get("requestId") == self.request_id

    @property
    def tool_calls(self) -> list[ToolCall]:
        calls: list[ToolCall] = []
        for event in self.events:
            if event.type != "stream_chunk":
                continue
            raw = (_data(event.frame).get("state") or {}).get("rawResponse") or {}
            if "toolCall" in raw:
                call = raw["toolCall"]
                calls.append(ToolCall(str(call.get("name")), call.get("arguments"), started=event.at))
            elif "toolResult" in raw:
                result = raw["toolResult"]
                waiting = [c for c in calls if c.name == result.get("name") and c.finished is None]
                if waiting:
                    waiting[0].result = result.get("content", result.get("result"))
                    waiting[0].is_error = bool(result.get("isError"))
                    waiting[0].finished = event.at
        record = self._record()
        if record is not None:
            for name, tracebacks in record.tool_tracebacks.items():
                failed = [c for c in calls if c.name == name and c.is_error]
                for call, trace in zip(failed, tracebacks):
                    call.traceback = trace
        return calls

    @property
    def pending(self) -> dict[str, Any] | None:
        """What a parked turn waits for, or None.

        ``{"kind": "confirmation", "tool": ..., "description": ...}`` resumes with
        ``await chat.confirm(True)``; ``{"kind": "interaction", "interaction": ...,
        "interaction_id": ..., "spec": ..., "reason": ...}`` with ``await chat.submit(values)``.
        """
        pending: dict[str, Any] | None = None
        for event in self.events:
            inner = _data(event.frame).get("data") or {}
            if event.type == "write_confirmation_required":
                pending = {"kind": "confirmation", "tool": inner.get("toolId"), "description": inner.get("actionDescription")}
            elif event.type == "interaction_required":
                pending = {
                    "kind": "interaction",
                    "interaction": inner.get("kind"),
                    "interaction_id": inner.get("interactionId"),
                    "spec": inner.get("spec"),
                    "reason": inner.get("reason"),
                }
            elif event.type == "interaction_invalid" and pending is not None:
                pending = {**pending, "errors": inner.get("errors")}
            elif event.type == "immediate_response" and event.frame.get("status") == 200 and pending is not None:
                ack = _data(event.frame)
                if "approved" in ack or "interactionId" in ack:
                    pending = None
            elif event.type in TERMINAL and self._is_own(event):
                pending = None
        return pending

    @property
    def llm_requests(self) -> list[Any]:
        """Each model call of the turn: ``.messages`` and ``.tools`` as sent, ``.text``,
        ``.tool_calls`` and ``.usage`` as returned. Empty when the server is not in this kernel."""
        record = self._record()
        return list(record.llm_calls) if record is not None else []

    # -- actions ---------------------------------------------------------------------

    async def replay(
        self,
        *,
        model: str | None = None,
        instructions: str | None = None,
        tools: Sequence[Any] | None = None,
    ) -> Turn:
        """Run the same message again, in a fresh session seeded with the same history.

        Change one thing: ``model`` (a model name for this turn), ``instructions``
        (the system prompt) or ``tools`` (the tools to offer: names, or functions
        that are registered with ``srv.tool`` first).
        """
        if self._server is None:
            raise RuntimeError("this turn has no server in this kernel to replay on; replay turns from srv.turns or a chat")
        record = self._record()
        history = list(record.history) if record is not None else []
        return await self._server.replay(self.message, history, model=model, instructions=instructions, tools=tools)

    def to_scenario(self, path: str | Any) -> dict[str, Any]:
        """Write this turn as a conformance scenario file; return the scenario."""
        from smooth_nb.notebook.export import write_scenario

        return write_scenario([self], path, server=self._server)

    # -- display -----------------------------------------------------------------------

    def __repr__(self) -> str:
        lines = [f"Turn {self.request_id} [{self.status}] {self.message!r}"]
        for call in self.tool_calls:
            outcome = "error" if call.is_error else "ok"
            lines.append(f"  tool {call.name}({json.dumps(call.arguments, ensure_ascii=False)}) -> {outcome} {_ms(call.duration)}")
        if self.pending:
            lines.append(f"  waiting for {self.pending['kind']}: {self.pending.get('tool') or self.pending.get('interaction')}")
        if self.error:
            lines.append(f"  error {self.error['code']}: {self.error['message']}")
        lines.append(f"  text: {self.text!r}")
        for citation in self.citations:
            lines.append(f"  cited {citation.get('id')} (score {citation.get('score')})")
        summary = f"ttft {_ms(self.ttft)}, total {_ms(self.duration)}, {len(self.events)} events"
        if self.usage:
            summary += f", tokens {self.usage.get('promptTokens')} in / {self.usage.get('completionTokens')} out"
        lines.append("  " + summary)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from smooth_nb.notebook.views import turn_html

        return turn_html(self)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    milliseconds = seconds * 1000
    return f"{milliseconds:.1f} ms" if milliseconds < 10 else f"{milliseconds:.0f} ms"

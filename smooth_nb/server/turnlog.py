"""The server's own record of every turn: frames sent, model calls, tool tracebacks.

Each turn gets a :class:`TurnRecord` when it starts. The connection appends
every frame it sends while the turn is open, and the turn's actions
(``confirm_tool_action``, ``submit_interaction``, ``cancel``) as they arrive,
each with its time since the turn started. The engine wiring appends each
model call; a tool that raises leaves its traceback. The notebook's debugging
views read these records; nothing here changes what any client receives.
"""

from __future__ import annotations

import contextvars
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The record of the turn whose task is running, for tools that fail inside it.
current_record: contextvars.ContextVar[TurnRecord | None] = contextvars.ContextVar("smooth_nb_turn", default=None)

TERMINAL_TYPES = frozenset({"eventual_response", "cancelled", "error"})


@dataclass
class TurnRecord:
    request_id: str
    session_id: str
    message: str
    #: History the turn started from, as ``{"role", "content"}`` messages.
    history: list[dict[str, Any]]
    started: float = field(default_factory=time.perf_counter)
    #: ``(seconds since start, frame)`` for each frame sent while the turn was open.
    frames: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    #: ``(seconds since start, frame)`` for each action the client sent for this turn.
    actions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    #: The engine's model calls (``smooth_nb.engine.recording.LlmCall``), in order.
    llm_calls: list[Any] = field(default_factory=list)
    #: Formatted tracebacks of tools that raised, by tool name.
    tool_tracebacks: dict[str, list[str]] = field(default_factory=dict)
    done: bool = False

    def add_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append((time.perf_counter() - self.started, frame))
        if frame.get("type") in TERMINAL_TYPES and frame.get("requestId") == self.request_id:
            self.done = True

    def add_action(self, frame: dict[str, Any]) -> None:
        self.actions.append((time.perf_counter() - self.started, frame))


class TurnLog:
    """The newest turns of a server, oldest dropped first past ``max_turns``.

    Model calls hold every message the model saw, so they are kept only for the
    newest ``detailed_turns`` turns; older records keep their frames.
    """

    def __init__(self, max_turns: int = 1000, detailed_turns: int = 200) -> None:
        self.max_turns = max_turns
        self.detailed_turns = detailed_turns
        self._records: OrderedDict[str, TurnRecord] = OrderedDict()
        self._detailed: deque[TurnRecord] = deque()
        #: Called with each new record (the notebook's live ``srv.turns``).
        self.listeners: list[Callable[[TurnRecord], None]] = []

    def start(self, record: TurnRecord) -> TurnRecord:
        self._records.pop(record.request_id, None)
        self._records[record.request_id] = record
        while len(self._records) > self.max_turns:
            self._records.popitem(last=False)
        self._detailed.append(record)
        while len(self._detailed) > self.detailed_turns:
            old = self._detailed.popleft()
            old.llm_calls.clear()
            old.history.clear()
        for listener in list(self.listeners):
            listener(record)
        return record

    def get(self, request_id: str) -> TurnRecord | None:
        return self._records.get(request_id)

    def records(self) -> list[TurnRecord]:
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)

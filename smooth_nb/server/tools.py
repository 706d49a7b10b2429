"""Tools the server offers the model during a turn.

A :class:`Tool` has the attributes the engine reads (``name``, ``description``,
``parameters``, ``execute``), so it is handed to the agent as it is. Handlers
take the parsed arguments as one dict. A result that is not a string is sent
to the model as JSON.

An async handler runs on the server's loop. A plain function runs in a worker
thread, so a slow or blocking tool never stalls the server, the chat widget or
other sessions; inside a notebook that is the kernel's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smooth_nb.server.turnlog import current_record

_TOOL_NAME = re.compile(r"^\S{1,128}$")


@dataclass
class Tool:
    name: str
    description: str
    handler: Callable[[dict[str, Any]], Any]
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    #: When set, the turn parks for a human ``confirm_tool_action`` before the tool runs.
    confirm: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOOL_NAME.match(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use 1 to 128 characters without spaces "
                "(OpenAI-compatible APIs accept only letters, digits, '_' and '-', at most 64)"
            )
        if not callable(self.handler):
            raise TypeError(f"tool {self.name!r}: handler must be callable, got {type(self.handler).__name__}")

    async def execute(self, arguments: dict[str, Any]) -> str:
        try:
            if inspect.iscoroutinefunction(self.handler):
                result = await self.handler(arguments)
            else:
                result = await asyncio.to_thread(self.handler, arguments)
                if inspect.isawaitable(result):
                    result = await result
        except Exception:
            # The engine turns the exception into an error result for the model;
            # the traceback is kept for the person debugging the turn.
            record = current_record.get()
            if record is not None:
                record.tool_tracebacks.setdefault(self.name, []).append(traceback.format_exc())
            raise
        if isinstance(result, str):
            return result
        return json.dumps(result, default=str, ensure_ascii=False)

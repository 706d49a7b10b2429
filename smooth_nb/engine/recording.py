"""Record what a turn sends to the model and what comes back.

:class:`RecordingProvider` wraps any provider of the engine's
``chat.completions.create`` surface. Each call is appended to a sink as an
:class:`LlmCall` holding the exact request (messages, tool specs, model) and the
reassembled response (text, tool calls, usage), streamed or not. The wrapped
stream still carries the inner stream's attributes (the gateway's cost headers)
and closes it when the engine closes the wrapper.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

_REQUEST_FIELDS = ("model", "messages", "tools", "temperature", "max_tokens")


@dataclass
class LlmCall:
    """One model call: what was sent, and what came back."""

    request: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    error: str | None = None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.request.get("messages") or []

    @property
    def tools(self) -> list[dict[str, Any]]:
        return self.request.get("tools") or []

    @property
    def duration(self) -> float | None:
        return None if self.finished is None else self.finished - self.started

    def response(self) -> dict[str, Any]:
        """Return the reply in the scenario format: a text or a tool-call entry."""
        if self.tool_calls:
            call = self.tool_calls[0]
            return {"kind": "toolCall", "name": call["name"], "arguments": call["arguments"]}
        return {"kind": "text", "text": self.text}


def _snapshot(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _usage(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    return {
        "prompt_tokens": int(getattr(raw, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(raw, "completion_tokens", 0) or 0),
    }


class _RecordingStream:
    def __init__(self, inner: Any, call: LlmCall) -> None:
        self._inner = inner
        self._call = call
        self._partials: dict[int, dict[str, str]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        call = self._call
        try:
            async for chunk in self._inner:
                usage = _usage(getattr(chunk, "usage", None))
                if usage is not None:
                    call.usage = usage
                for choice in getattr(chunk, "choices", None) or []:
                    delta = getattr(choice, "delta", None)
                    if delta is None:
                        continue
                    if getattr(delta, "content", None):
                        call.text += delta.content
                    for tool_call in getattr(delta, "tool_calls", None) or []:
                        self._accumulate(tool_call)
                yield chunk
        except Exception as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            call.tool_calls = [self._partials[index] for index in sorted(self._partials)]
            call.finished = time.perf_counter()

    def _accumulate(self, tool_call: Any) -> None:
        entry = self._partials.setdefault(int(getattr(tool_call, "index", 0) or 0), {"id": "", "name": "", "arguments": ""})
        if getattr(tool_call, "id", None):
            entry["id"] = tool_call.id
        function = getattr(tool_call, "function", None)
        if function is not None:
            if getattr(function, "name", None):
                entry["name"] = function.name
            if getattr(function, "arguments", None):
                entry["arguments"] += function.arguments

    async def aclose(self) -> None:
        closer = getattr(self._inner, "aclose", None) or getattr(self._inner, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result


class _Completions:
    def __init__(self, inner: Any, sink: Callable[[LlmCall], None]) -> None:
        self._inner = inner
        self._sink = sink

    async def create(self, **kwargs: Any) -> Any:
        # A shallow copy is enough: the engine appends to its message list between
        # calls but never edits a message it already sent.
        request = {key: _snapshot(kwargs[key]) for key in _REQUEST_FIELDS if kwargs.get(key) is not None}
        call = LlmCall(request=request)
        self._sink(call)
        try:
            result = await self._inner.chat.completions.create(**kwargs)
        except Exception as exc:
            call.error = f"{type(exc).__name__}: {exc}"
            call.finished = time.perf_counter()
            raise
        if kwargs.get("stream"):
            return _RecordingStream(result, call)
        message = result.choices[0].message
        call.text = getattr(message, "content", None) or ""
        call.tool_calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in (getattr(message, "tool_calls", None) or [])
        ]
        call.usage = _usage(getattr(result, "usage", None))
        call.finished = time.perf_counter()
        return result


class RecordingProvider:
    """A provider that forwards to ``inner`` and reports every call to ``sink``."""

    def __init__(self, inner: Any, sink: Callable[[LlmCall], None]) -> None:
        self.chat = SimpleNamespace(completions=_Completions(inner, sink))
        # The engine gates prompt-cache markers on the route; keep the inner provider's.
        self.api_base_url = getattr(inner, "api_base_url", None)

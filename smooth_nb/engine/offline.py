"""Model stand-ins that need no network: the offline answerer and stream helpers.

:class:`OfflineKnowledgeProvider` implements the ``chat.completions.create``
surface the engine calls, so the engine's own agent loop still runs each turn.
Instead of a model, it answers with the knowledge-base passage that best matches
the user's last message, naming its source, or with a short explanation of how
to connect a real model when nothing matches.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

#: Shown when the offline answerer has nothing to say, and by the notebook UI.
CONNECT_HINT = (
    "To use a real model, set SMOOAI_GATEWAY_URL (an OpenAI-compatible base URL) and "
    "SMOOAI_GATEWAY_KEY before starting the server, and optionally SMOOTH_AGENT_MODEL."
)


def split_for_streaming(text: str) -> list[str]:
    """Split ``text`` into word-sized pieces that concatenate back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text) or ([text] if text else [])


def _chunk(content: str | None = None, usage: Any = None) -> SimpleNamespace:
    delta = SimpleNamespace(content=content, tool_calls=None)
    choices = [] if usage is not None else [SimpleNamespace(delta=delta, finish_reason=None)]
    return SimpleNamespace(choices=choices, usage=usage)


async def stream_text(text: str) -> AsyncIterator[SimpleNamespace]:
    """Yield OpenAI-shaped streaming chunks for ``text``; no model ran, so no usage is reported."""
    for piece in split_for_streaming(text):
        yield _chunk(piece)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class _Completions:
    def __init__(self, knowledge: Any) -> None:
        self._knowledge = knowledge

    async def create(self, **kwargs: Any) -> Any:
        messages = list(kwargs.get("messages") or [])
        question = _last_user_text(messages)
        hits = self._knowledge.search(question, 1) if self._knowledge is not None else []
        if hits:
            text = f"{hits[0].content} (source: {hits[0].source})"
        else:
            text = "Offline mode has no model, and the knowledge base has no passage that matches this question. " + CONNECT_HINT
        if kwargs.get("stream"):
            return stream_text(text)
        message = SimpleNamespace(content=text, tool_calls=None)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)], usage=None)


class _RepeatingCompletions:
    def __init__(self, text: str) -> None:
        self._text = text

    async def create(self, **kwargs: Any) -> Any:
        # The same usage on every reply as the engine's scripted mock, 10 prompt and 5 completion tokens.
        usage = SimpleNamespace(prompt_tokens=10, completion_tokens=5)
        if kwargs.get("stream"):
            return _stream_with_usage(self._text, usage)
        message = SimpleNamespace(content=self._text, tool_calls=None)
        return SimpleNamespace(choices=[SimpleNamespace(message=message)], usage=usage)


async def _stream_with_usage(text: str, usage: Any) -> AsyncIterator[SimpleNamespace]:
    async for chunk in stream_text(text):
        yield chunk
    yield _chunk(usage=usage)


class RepeatingReplyProvider:
    """An engine LLM provider that answers every call with the same text, streamed word by word.

    This is the ``--mock-reply`` model. Unlike the engine's ``MockLlmProvider``,
    which replays a queue and splits each reply into at most three pieces, it
    never runs dry, and a reply of N words streams as N tokens.
    """

    def __init__(self, text: str) -> None:
        self.chat = SimpleNamespace(completions=_RepeatingCompletions(text))


class OfflineKnowledgeProvider:
    """An engine LLM provider that answers from a knowledge base, with no model."""

    def __init__(self, knowledge: Any) -> None:
        self.chat = SimpleNamespace(completions=_Completions(knowledge))

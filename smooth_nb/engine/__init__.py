"""Engine wiring: which model a turn talks to, and one agent run per turn.

The agent loop is ``smooth_operator_core.SmoothAgent``; this module only chooses
its LLM provider and options. ``smooth_operator_core`` and the ``openai`` client
are imported inside functions, the first time a turn or :func:`warm_up` needs
them, so importing this module stays cheap.

Model modes:

``gateway``
    Any OpenAI-compatible endpoint, from ``SMOOAI_GATEWAY_URL`` and
    ``SMOOAI_GATEWAY_KEY`` (model from ``SMOOTH_AGENT_MODEL``).
``mock``
    Every turn answers the same text, streamed word by word (see :mod:`.offline`).
``offline``
    No model: the best knowledge-base passage answers (see :mod:`.offline`).
``script``
    The engine's ``MockLlmProvider`` replays scripted replies (text or tool
    calls), one per model call, across turns.
``unavailable``
    No key configured; ``send_message`` gets a clean ``LLM_UNAVAILABLE`` error.

Whatever the mode, replies queued with :meth:`ModelRouter.push_text` or
:meth:`ModelRouter.push_tool_call` answer first: a turn that starts while the
queue is not empty runs entirely on the scripted mock.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from smooth_nb.engine.offline import CONNECT_HINT

__all__ = ["CONNECT_HINT", "LlmUnavailable", "ModelSettings", "ModelRouter", "warm_up"]

#: The system prompt a turn gets when the caller sets no instructions.
DEFAULT_INSTRUCTIONS = (
    "You are a helpful assistant running inside a developer's notebook. When a knowledge base is "
    "provided, answer from it and mention the source; when the answer is not in it, say so."
)


class LlmUnavailable(Exception):
    """No model is configured, so a turn cannot run."""


@dataclass(frozen=True)
class ModelSettings:
    """The model settings of a server; the key never appears in ``repr``."""

    mode: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    mock_reply: str | None = None
    #: Scripted replies for ``script`` mode: ``{"kind": "text", "text": ...}`` or
    #: ``{"kind": "toolCall", "name": ..., "arguments": "<json>"}``.
    script: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        mock_reply: str | None = None,
        offline: bool = False,
        offline_without_key: bool = False,
    ) -> ModelSettings:
        """Choose the mode: a mock reply or ``offline`` win, then a gateway key.

        With no key, the mode is ``unavailable``, or ``offline`` when
        ``offline_without_key`` is set (the notebook magic's choice).
        """
        environ = os.environ if environ is None else environ
        model = (environ.get("SMOOTH_AGENT_MODEL") or "").strip() or None
        if mock_reply is not None:
            return cls(mode="mock", mock_reply=mock_reply, model=model)
        if offline:
            return cls(mode="offline", model=model)
        key = (environ.get("SMOOAI_GATEWAY_KEY") or "").strip()
        if key:
            base_url = (environ.get("SMOOAI_GATEWAY_URL") or "").strip() or None
            return cls(mode="gateway", base_url=base_url, api_key=key, model=model)
        return cls(mode="offline" if offline_without_key else "unavailable", model=model)

    def notice(self) -> str | None:
        """Return the banner a chat UI shows for this mode, or None when a real model answers."""
        if self.mode == "offline":
            return (
                "Offline mode: no LLM is configured, so each answer is the best matching "
                "knowledge-base passage. " + CONNECT_HINT
            )
        if self.mode == "mock":
            return "Mock model: every turn answers the same fixed reply."
        if self.mode == "script":
            return "Scripted model: turns replay a scenario's scripted replies."
        return None

    def describe(self) -> str:
        """Return a one-line, secret-free description for logs and cell output."""
        if self.mode == "gateway":
            return f"gateway {self.base_url or '(openai default URL)'}, model {self.model or '(engine default)'}"
        if self.mode == "mock":
            return "mock model (every turn answers the configured reply)"
        if self.mode == "offline":
            return "offline: no model, answers with the best knowledge-base passage"
        return "no model configured"


def warm_up() -> None:
    """Import the engine and the LLM client now, so the first turn does not pay for it."""
    import smooth_operator_core  # noqa: F401  (imported for its side effect: module load)


class ModelRouter:
    """Build each turn's agent on the configured model and stream its events.

    The gateway client is created once and reused, so turns share its HTTP
    connection pool.
    """

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self._gateway: Any = None
        self._scripted: Any = None
        self._repeating: Any = None
        self._call_ids = 0
        for entry in settings.script:
            self.push(entry)

    # -- the scripted mock ---------------------------------------------------

    def push(self, entry: dict[str, Any]) -> None:
        """Queue one scripted reply in the scenario format (``kind`` text or toolCall)."""
        kind = entry.get("kind")
        if kind == "text":
            self.push_text(str(entry.get("text", "")))
        elif kind == "toolCall":
            self.push_tool_call(str(entry.get("name", "")), entry.get("arguments", "{}"))
        else:
            raise ValueError(f"invalid scripted reply kind {kind!r}: expected 'text' or 'toolCall'")

    def push_text(self, text: str) -> None:
        self._script_provider().push_text(text)

    def push_tool_call(self, name: str, arguments: str | dict[str, Any]) -> None:
        import json

        raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
        self._call_ids += 1
        self._script_provider().push_tool_call(f"call_{self._call_ids}", name, raw)

    def push_error(self, message: str) -> None:
        """Queue a model call that fails with ``message``, as an unreachable gateway would."""
        self._script_provider().push_error(message)

    def clear_script(self) -> None:
        """Drop every queued scripted reply."""
        if self._scripted is not None:
            # NOTE: MockLlmProvider has no public way to empty its queue; its FIFO list is `_script`.
            self._scripted._script.clear()

    @property
    def scripted_pending(self) -> int:
        """How many scripted replies are still queued."""
        if self._scripted is None:
            return 0
        # NOTE: MockLlmProvider exposes no public queue length; its FIFO list is `_script`.
        return len(self._scripted._script)

    def _script_provider(self) -> Any:
        if self._scripted is None:
            from smooth_operator_core import MockLlmProvider

            self._scripted = MockLlmProvider()
        return self._scripted

    # -- choosing the provider -------------------------------------------------

    def _provider(self, knowledge: Any) -> Any:
        settings = self.settings
        if settings.mode == "script" or self.scripted_pending:
            return self._script_provider()
        if settings.mode == "gateway":
            if self._gateway is None:
                from smooth_operator_core import GatewayLlmProvider

                self._gateway = GatewayLlmProvider(
                    base_url=settings.base_url or "https://api.openai.com/v1", api_key=settings.api_key
                )
            return self._gateway
        if settings.mode == "mock":
            if self._repeating is None:
                from smooth_nb.engine.offline import RepeatingReplyProvider

                self._repeating = RepeatingReplyProvider(settings.mock_reply or "")
            return self._repeating
        if settings.mode == "offline":
            from smooth_nb.engine.offline import OfflineKnowledgeProvider

            return OfflineKnowledgeProvider(knowledge)
        raise LlmUnavailable(
            "no LLM is configured for this server, so it cannot run send_message turns. " + CONNECT_HINT
        )

    def check_available(self) -> None:
        """Raise :class:`LlmUnavailable` when turns cannot run."""
        if self.settings.mode == "unavailable" and not self.scripted_pending:
            self._provider(None)

    async def stream(
        self,
        message: str,
        history: Sequence[dict[str, Any]],
        *,
        knowledge: Any = None,
        tools: Sequence[Any] = (),
        instructions: str | None = None,
        tool_errors: list[tuple[str, bool]] | None = None,
        needs_approval: Callable[[str, dict[str, Any]], bool] | None = None,
        approve: Callable[[str, dict[str, Any]], Awaitable[bool]] | None = None,
        approval_timeout: float = 3600.0,
        model: str | None = None,
        on_llm_call: Callable[[Any], None] | None = None,
    ) -> AsyncIterator[Any]:
        """Run one turn and yield the engine's stream events.

        Events carry ``type``: ``text`` (``.text``), ``tool_call`` (``.name``,
        ``.arguments``), ``tool_result`` (``.name``, ``.result``) and a final
        ``done`` (``.response`` with ``.text`` and ``.usage``). When
        ``tool_errors`` is given, each tool that ran appends ``(name, is_error)``
        to it before its ``tool_result`` event is yielded.

        Tools for which ``needs_approval(name, arguments)`` is true run only
        after ``approve(name, arguments)`` returns True; a False, or no answer
        within ``approval_timeout`` seconds, gives the model a refusal instead.
        ``model`` overrides the configured model name for this turn, and
        ``on_llm_call`` receives a :class:`~smooth_nb.engine.recording.LlmCall`
        for every model call.
        """
        from smooth_operator_core import AgentOptions, DelegateHumanGate, HumanApprovalResponse, SmoothAgent, ToolHook

        provider = self._provider(knowledge)
        if on_llm_call is not None:
            from smooth_nb.engine.recording import RecordingProvider

            provider = RecordingProvider(provider, on_llm_call)
        hooks = []
        if tool_errors is not None:

            class _RecordToolErrors(ToolHook):
                async def post_call(self, call: Any, result: Any) -> None:
                    tool_errors.append((call.name, bool(result.is_error)))

            hooks.append(_RecordToolErrors())

        options = AgentOptions(
            instructions=DEFAULT_INSTRUCTIONS if instructions is None else instructions,
            knowledge=knowledge if knowledge is not None and len(knowledge) else None,
            tools=list(tools),
            tool_hooks=hooks,
        )
        if needs_approval is not None and approve is not None:

            async def decide(request: Any) -> Any:
                if await approve(request.tool_name, request.arguments):
                    return HumanApprovalResponse.approve()
                return HumanApprovalResponse.deny("the user refused this action")

            options.human_gate = DelegateHumanGate(decide)
            options.requires_approval = needs_approval
            options.approval_timeout_seconds = approval_timeout
        if model or self.settings.model:
            options.model = model or self.settings.model
        agent = SmoothAgent(provider, options)
        async for event in agent.run_stream(message, history=list(history)):
            yield event

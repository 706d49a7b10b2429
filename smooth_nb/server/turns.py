"""One streamed turn: the engine's events mapped onto protocol frames.

A turn acknowledges with ``immediate_response`` 202. It streams text as
``stream_token`` frames and a ``stream_chunk`` per tool call and tool result,
then ends with exactly one terminal frame: ``eventual_response`` 200 (with usage, and
citations when the knowledge base grounded the prompt), ``cancelled`` 499, or an
``error``. The user's message is stored when the turn starts; the agent's reply
only when the turn completes, so a cancelled or failed turn leaves no partial
answer in history.

A turn can park, waiting for the client:

- on a tool that needs write confirmation (``write_confirmation_required``,
  resumed by ``confirm_tool_action``);
- on a Rich Interaction the session can render (``interaction_required``,
  resumed by ``submit_interaction``).

Either way the park event goes out before the tool's deferred ``toolCall``
chunk, and the turn keeps its connection's turn slot until it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smooth_nb.server import protocol
from smooth_nb.server.interactions import KINDS, InteractionKind, SpecError
from smooth_nb.server.store import Session
from smooth_nb.server.turnlog import TurnRecord, current_record

if TYPE_CHECKING:
    from smooth_nb.server.dispatch import Connection

logger = logging.getLogger(__name__)

#: How many knowledge passages ground a turn; the engine's own default top-k.
KNOWLEDGE_TOP_K = 4
#: Maximum citation snippet length, in characters.
SNIPPET_MAX_CHARS = 400


@dataclass
class Park:
    """The client input a parked turn waits for; resolving ``future`` resumes it."""

    kind: str  # "confirmation" or "interaction"
    request_id: str
    future: asyncio.Future[Any]
    tool_name: str
    interaction_id: str | None = None
    interaction: InteractionKind | None = None
    spec: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.kind == "confirmation":
            return f"confirmation of tool {self.tool_name}"
        return f"{self.interaction.kind if self.interaction else 'interaction'} {self.interaction_id}"


@dataclass
class TurnRun:
    """The state of one running turn."""

    connection: Connection
    session: Session
    request_id: str
    text: str
    stream: bool
    record: TurnRecord
    model: str | None = None
    deferred: dict[str, deque[dict[str, Any]]] = field(default_factory=lambda: defaultdict(deque))
    park: Park | None = None
    #: Text deltas not sent yet; see :meth:`add_text`.
    pending_text: list[str] = field(default_factory=list)
    flush_scheduled: bool = False

    @property
    def state(self) -> Any:
        return self.connection.state

    def send(self, frame: dict[str, Any]) -> None:
        self.flush_text()
        self.connection.send(frame)

    def add_text(self, text: str) -> None:
        """Queue a text delta; it goes out as soon as the turn waits for anything.

        Deltas that are ready at the same moment (a fast model, or several SSE
        events in one network read) leave as one ``stream_token``, which the
        protocol allows: clients concatenate tokens and never count them. A
        delta is never held while the turn waits, so this adds no latency.
        """
        self.pending_text.append(text)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_text)

    def flush_text(self) -> None:
        self.flush_scheduled = False
        if self.pending_text:
            text = "".join(self.pending_text)
            self.pending_text.clear()
            self.connection.send(protocol.stream_token(self.request_id, text))

    # -- parking ---------------------------------------------------------------

    def _flush_deferred(self, tool_name: str) -> None:
        queue = self.deferred.get(tool_name)
        if queue:
            self.send(queue.popleft())

    async def _wait(self, park: Park) -> Any:
        self.park = park
        self.state.parks[self.session.session_id] = park
        try:
            return await park.future
        finally:
            self.park = None
            if self.state.parks.get(self.session.session_id) is park:
                del self.state.parks[self.session.session_id]

    async def confirm(self, name: str, arguments: dict[str, Any]) -> bool:
        """Park until the client approves or denies running tool ``name``."""
        park = Park("confirmation", self.request_id, asyncio.get_running_loop().create_future(), name)
        description = f"Run tool {name} with arguments {json.dumps(arguments, ensure_ascii=False)[:500]}"
        payload = {"toolId": name, "actionDescription": description}
        self.send(protocol.turn_event("write_confirmation_required", self.request_id, payload))
        self._flush_deferred(name)
        logger.info("turn %s parked on %s", self.request_id, park.describe())
        return bool(await self._wait(park))

    async def raise_interaction(self, kind: InteractionKind, arguments: dict[str, Any]) -> str:
        """Run a raise tool: park on the interaction, or answer with the fallback."""
        spec, reason = kind.parse_spec(arguments)
        if kind.capability not in self.session.supports:
            return kind.fallback(spec)
        park = Park(
            "interaction",
            self.request_id,
            asyncio.get_running_loop().create_future(),
            kind.tool_name,
            interaction_id=protocol.new_id(),
            interaction=kind,
            spec=spec,
        )
        payload = {"interactionId": park.interaction_id, "kind": kind.kind, "spec": spec, "reason": reason}
        self.send(protocol.turn_event("interaction_required", self.request_id, payload))
        self._flush_deferred(kind.tool_name)
        logger.info("turn %s parked on %s", self.request_id, park.describe())
        outcome = await self._wait(park)
        return json.dumps(outcome, ensure_ascii=False)

    def parks_on(self, tool_name: str) -> bool:
        tool = self.state.tools.get(tool_name)
        if tool is not None and tool.confirm:
            return True
        kind = KINDS.get(tool_name)
        return kind is not None and self.state.interactions and kind.capability in self.session.supports

    # -- running -----------------------------------------------------------------

    def tools(self) -> list[Any]:
        offered = self.state.session_overrides.get(self.session.session_id, {}).get("tools")
        tools: list[Any] = [
            tool for name, tool in self.state.tools.items() if name not in KINDS and (offered is None or name in offered)
        ]
        if self.state.interactions:
            tools += [_RaiseTool(kind, self) for kind in KINDS.values()]
        return tools

    async def run(self, history: list[dict[str, Any]]) -> None:
        current_record.set(self.record)
        state = self.state
        overrides = state.session_overrides.get(self.session.session_id, {})
        knowledge = _Grounding(state.knowledge) if len(state.knowledge) else None
        confirm_names = {name for name, tool in state.tools.items() if tool.confirm}
        tool_errors: list[tuple[str, bool]] = []
        reply = ""
        usage: Any = None
        cost_usd = 0.0
        try:
            events = state.router.stream(
                self.text,
                history,
                knowledge=knowledge,
                tools=self.tools(),
                instructions=overrides.get("instructions", state.instructions),
                tool_errors=tool_errors,
                model=self.model,
                on_llm_call=self.record.llm_calls.append,
                needs_approval=lambda name, arguments: name in confirm_names,
                approve=self.confirm,
                approval_timeout=state.confirmation_timeout,
            )
            async for event in events:
                kind = event.type
                if kind == "text":
                    if self.stream:
                        self.add_text(event.text)
                elif kind == "tool_call":
                    call = {"name": event.name, "arguments": _parse_arguments(event.arguments)}
                    frame = protocol.stream_chunk(self.request_id, event.name, {"rawResponse": {"toolCall": call}})
                    if self.parks_on(event.name):
                        self.deferred[event.name].append(frame)
                    else:
                        self.send(frame)
                elif kind == "tool_result":
                    self._flush_deferred(event.name)
                    is_error = _pop_tool_error(tool_errors, event.name)
                    result = {"name": event.name, "content": event.result, "isError": is_error}
                    self.send(protocol.stream_chunk(self.request_id, event.name, {"rawResponse": {"toolResult": result}}))
                elif kind == "done":
                    reply = event.response.text
                    usage = event.response.usage
                    cost_usd = event.response.cost_usd
        except asyncio.CancelledError:
            self.pending_text.clear()
            # The client sent cancel or closed its socket, or the server is stopping;
            # a stopping server has already sent this turn its terminal error.
            logger.info("turn %s on session %s cancelled", self.request_id, self.session.session_id)
            if not state.closing:
                self.send(protocol.cancelled(self.request_id))
            raise
        except Exception as exc:
            logger.warning(
                "turn %s on session %s failed: %s: %s", self.request_id, self.session.session_id, type(exc).__name__, exc
            )
            # A private class name (the mock's scripted error) means nothing to the reader.
            kind = "" if type(exc).__name__.startswith("_") else f"{type(exc).__name__}: "
            self.send(protocol.error(self.request_id, protocol.TURN_FAILED, f"the turn failed: {kind}{exc}"))
            return

        response = protocol.agent_response(reply)
        stored = state.store.append(self.session, "outbound", reply, structured=response)
        data: dict[str, Any] = {"messageId": stored.id, "response": response, "needsEscalation": False}
        # Offline turns run no model, so they have no token usage to report.
        if usage is not None and state.router.settings.mode != "offline":
            data["usage"] = {"promptTokens": int(usage.prompt_tokens), "completionTokens": int(usage.completion_tokens)}
            # The engine prices tokens by model name; only a real gateway turn has a real cost.
            if cost_usd and state.router.settings.mode == "gateway":
                data["usage"]["costUsd"] = float(cost_usd)
        if knowledge is not None:
            hits = knowledge.hits if knowledge.hits is not None else knowledge.query(self.text, KNOWLEDGE_TOP_K)
            citations = [_citation(hit) for hit in hits]
            if citations:
                data["citations"] = citations
        self.send(protocol.eventual_response(self.request_id, data))


class _Grounding:
    """The knowledge base as one turn uses it: it keeps the passages the engine retrieved.

    The turn cites exactly those passages, without ranking the knowledge base a
    second time, even when a tool changes the knowledge base during the turn.
    """

    def __init__(self, knowledge: Any) -> None:
        self._knowledge = knowledge
        self.hits: list[Any] | None = None

    def __len__(self) -> int:
        return len(self._knowledge)

    def search(self, query: str, top_k: int = 4) -> list[Any]:
        return self._knowledge.search(query, top_k)

    def query(self, query: str, top_k: int = KNOWLEDGE_TOP_K) -> list[Any]:
        self.hits = self._knowledge.query(query, top_k)
        return self.hits


class _RaiseTool:
    """A server-registered raise tool bound to one turn."""

    def __init__(self, kind: InteractionKind, turn: TurnRun) -> None:
        self.kind = kind
        self.turn = turn
        self.name = kind.tool_name
        self.description = kind.tool_description
        self.parameters = kind.tool_parameters

    async def execute(self, arguments: dict[str, Any]) -> str:
        try:
            return await self.turn.raise_interaction(self.kind, arguments)
        except SpecError as exc:
            raise ValueError(f"invalid {self.kind.kind} request: {exc}") from None


def start_turn(
    connection: Connection, session: Session, request_id: str, text: str, *, stream: bool, model: str | None = None
) -> asyncio.Task[None]:
    store = connection.state.store
    prior = store.history(session, last=connection.state.history_messages)
    history = [{"role": message.role, "content": message.text} for message in prior]
    record = connection.state.turn_log.start(TurnRecord(request_id, session.session_id, text, history))
    connection.record = record
    user_message = store.append(session, "inbound", text)
    connection.send(
        protocol.immediate_response(request_id, 202, {"sessionId": session.session_id, "messageId": user_message.id})
    )
    run = TurnRun(connection, session, request_id, text, stream, record, model)
    busy = connection.state.busy_sessions
    busy.add(session.session_id)
    task = asyncio.get_running_loop().create_task(run.run(history), name=f"smooth-nb turn {request_id}")
    task.add_done_callback(lambda _: busy.discard(session.session_id))
    return task


def _parse_arguments(raw: str) -> Any:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return raw


def _pop_tool_error(tool_errors: list[tuple[str, bool]], name: str) -> bool:
    """Return whether the tool result for ``name`` was an error.

    The engine's tool hook records each tool that ran. A result with no record
    came from a path that never ran the tool (unknown tool, invalid JSON
    arguments, a denied confirmation), and every such path is an error.
    """
    if tool_errors and tool_errors[0][0] == name:
        return tool_errors.pop(0)[1]
    return True


def _citation(hit: Any) -> dict[str, Any]:
    snippet = hit.content if len(hit.content) <= SNIPPET_MAX_CHARS else hit.content[: SNIPPET_MAX_CHARS - 1] + "…"
    citation: dict[str, Any] = {"id": hit.source, "title": hit.source, "snippet": snippet, "score": float(hit.score)}
    if hit.source.startswith(("http://", "https://")):
        citation["url"] = hit.source
    return citation

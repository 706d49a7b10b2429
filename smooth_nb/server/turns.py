"""One streamed turn: the engine's events mapped onto protocol frames.

A turn acknowledges with ``immediate_response`` 202, streams a ``stream_token``
per text delta and a ``stream_chunk`` per tool call and tool result, then ends
with exactly one terminal frame: ``eventual_response`` 200 (with usage, and
citations when the knowledge base grounded the prompt), ``cancelled`` 499, or an
``error``. The user's message is stored when the turn starts; the agent's reply
only when the turn completes, so a cancelled or failed turn leaves no partial
answer in history.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from smooth_nb.server import protocol
from smooth_nb.server.store import Session

if TYPE_CHECKING:
    from smooth_nb.server.dispatch import Connection

logger = logging.getLogger(__name__)

#: How many knowledge passages ground a turn; the engine's own default top-k.
KNOWLEDGE_TOP_K = 4
#: Longest citation snippet, in characters.
SNIPPET_MAX_CHARS = 400


def start_turn(connection: Connection, session: Session, request_id: str, text: str, *, stream: bool) -> asyncio.Task[None]:
    store = connection.state.store
    history = [{"role": message.role, "content": message.text} for message in store.history(session)]
    user_message = store.append(session, "inbound", text)
    connection.send(
        protocol.immediate_response(request_id, 202, {"sessionId": session.session_id, "messageId": user_message.id})
    )
    return asyncio.get_running_loop().create_task(
        _run_turn(connection, session, request_id, text, history, stream=stream),
        name=f"smooth-nb turn {request_id}",
    )


async def _run_turn(
    connection: Connection,
    session: Session,
    request_id: str,
    text: str,
    history: list[dict[str, Any]],
    *,
    stream: bool,
) -> None:
    state = connection.state
    knowledge = state.knowledge if len(state.knowledge) else None
    tool_errors: list[tuple[str, bool]] = []
    reply = ""
    usage: Any = None
    cost_usd = 0.0
    try:
        events = state.router.stream(
            text,
            history,
            knowledge=knowledge,
            tools=list(state.tools.values()),
            instructions=state.instructions,
            tool_errors=tool_errors,
        )
        async for event in events:
            kind = event.type
            if kind == "text":
                if stream:
                    connection.send(protocol.stream_token(request_id, event.text))
            elif kind == "tool_call":
                call = {"name": event.name, "arguments": _parse_arguments(event.arguments)}
                connection.send(protocol.stream_chunk(request_id, event.name, {"rawResponse": {"toolCall": call}}))
            elif kind == "tool_result":
                is_error = _pop_tool_error(tool_errors, event.name)
                result = {"name": event.name, "content": event.result, "isError": is_error}
                connection.send(protocol.stream_chunk(request_id, event.name, {"rawResponse": {"toolResult": result}}))
            elif kind == "done":
                reply = event.response.text
                usage = event.response.usage
                cost_usd = event.response.cost_usd
    except asyncio.CancelledError:
        # The client sent cancel, or its socket closed (then nobody reads this frame).
        logger.info("turn %s on session %s cancelled", request_id, session.session_id)
        if not connection.state.closing:
            connection.send(_cancelled(request_id))
        raise
    except Exception as exc:
        logger.warning("turn %s on session %s failed: %s: %s", request_id, session.session_id, type(exc).__name__, exc)
        connection.send(
            protocol.error(request_id, protocol.TURN_FAILED, f"the turn failed: {type(exc).__name__}: {exc}")
        )
        return

    response = protocol.agent_response(reply)
    stored = state.store.append(session, "outbound", reply, structured=response)
    data: dict[str, Any] = {"messageId": stored.id, "response": response, "needsEscalation": False}
    if usage is not None:
        data["usage"] = {"promptTokens": int(usage.prompt_tokens), "completionTokens": int(usage.completion_tokens)}
        # The engine prices tokens by model name; only a real gateway turn has a real cost.
        if cost_usd and state.router.settings.mode == "gateway":
            data["usage"]["costUsd"] = float(cost_usd)
    if knowledge is not None:
        citations = [_citation(hit) for hit in knowledge.query(text, KNOWLEDGE_TOP_K)]
        if citations:
            data["citations"] = citations
    connection.send(protocol.eventual_response(request_id, data))


def _cancelled(request_id: str) -> dict[str, Any]:
    return {
        "type": "cancelled",
        "requestId": request_id,
        "status": 499,
        "data": {"requestId": request_id, "status": 499},
        "timestamp": protocol.now_ms(),
    }


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

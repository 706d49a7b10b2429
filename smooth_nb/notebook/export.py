"""Export captured turns as a conformance scenario.

The scenario format is the one of the protocol's conformance corpus: the
model's recorded answers become ``mockLlmScript``, the tools' observed results
become ``server.tools``, the knowledge base becomes ``server.knowledge``, and
the events each frame produced become that step's ``expect`` list, with ids and
timestamps left out. ``python -m smooth_nb serve --scenario FILE`` replays it,
so a conversation captured against a real model becomes a regression test.

What the format cannot express raises :class:`ExportError` rather than
producing a scenario that would fail on replay: a model answer with several
tool calls at once, a tool that returned different results within the
exported turns, and a turn that ended in an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smooth_nb.server.interactions import KINDS

if TYPE_CHECKING:
    from smooth_nb.notebook.handle import NotebookServer
    from smooth_nb.notebook.turn import Event, Turn

_SKIPPED = frozenset({"keepalive", "pong"})
_PARKS = frozenset({"write_confirmation_required", "interaction_required"})


class ExportError(ValueError):
    """The turns cannot be written as a scenario that replays; the message gives the reason."""


def _chunk(event: Event) -> dict[str, Any]:
    data = event.frame.get("data") or {}
    return ((data.get("state") or {}).get("rawResponse")) or {}


def _is_tool_call(event: Event) -> bool:
    return event.type == "stream_chunk" and "toolCall" in _chunk(event)


class _Builder:
    def __init__(self) -> None:
        self.captures = 0
        self.interaction_placeholder: str | None = None

    def matchers(self, events: list[Event], errored_tools: set[str]) -> list[dict[str, Any]]:
        matchers: list[dict[str, Any]] = []
        index = 0
        while index < len(events):
            event = events[index]
            if event.type == "stream_token":
                end = index
                while end < len(events) and events[end].type == "stream_token":
                    end += 1
                following = events[end] if end < len(events) else None
                # Text streamed before a tool call belongs to a model answer that the
                # scenario format records as the tool call alone, so replay sends no such text.
                if following is None or not (_is_tool_call(following) or following.type in _PARKS):
                    text = "".join(str(e.frame.get("token", "")) for e in events[index:end])
                    matchers.append({"type": "stream_token", "repeat": True, "accumulate": "token", "assertAccumulated": text})
                index = end
                continue
            matcher = self.matcher(event, errored_tools)
            if matcher is not None:
                matchers.append(matcher)
            index += 1
        return matchers

    def matcher(self, event: Event, errored_tools: set[str]) -> dict[str, Any] | None:
        frame = event.frame
        data = frame.get("data") if isinstance(frame.get("data"), dict) else {}
        inner = data.get("data") if isinstance(data.get("data"), dict) else {}
        kind = event.type
        if kind in _SKIPPED:
            return None
        if kind == "immediate_response":
            matcher: dict[str, Any] = {"type": kind, "status": frame.get("status")}
            if "approved" in data:
                matcher["assert"] = {"data.approved": data["approved"]}
            return matcher
        if kind == "stream_chunk":
            raw = _chunk(event)
            if "toolCall" in raw:
                return {"type": kind, "assert": {"data.state.rawResponse.toolCall.name": raw["toolCall"].get("name")}}
            result = raw.get("toolResult") or {}
            asserts: dict[str, Any] = {"data.state.rawResponse.toolResult.name": result.get("name")}
            if result.get("name") not in errored_tools:
                asserts["data.state.rawResponse.toolResult.isError"] = bool(result.get("isError"))
            return {"type": kind, "assert": asserts}
        if kind == "write_confirmation_required":
            return {"type": kind, "assert": {"data.data.toolId": inner.get("toolId")}}
        if kind == "interaction_required":
            self.captures += 1
            self.interaction_placeholder = f"interactionId{self.captures}"
            return {
                "type": kind,
                "assert": {"data.data.kind": inner.get("kind")},
                "capture": {self.interaction_placeholder: "data.data.interactionId"},
            }
        if kind == "interaction_invalid":
            asserts = {"data.data.kind": inner.get("kind")}
            for position, error in enumerate(inner.get("errors") or []):
                asserts[f"data.data.errors.{position}.field"] = error.get("field")
            return {"type": kind, "assert": asserts}
        if kind == "eventual_response":
            asserts = {"data.data.response.responseParts": (inner.get("response") or {}).get("responseParts")}
            for position, citation in enumerate(inner.get("citations") or []):
                asserts[f"data.data.citations.{position}.id"] = citation.get("id")
            return {"type": kind, "status": 200, "assert": asserts}
        if kind == "cancelled":
            return {"type": kind, "status": 499}
        if kind == "error":
            return {"type": kind, "assert": {"error.code": (frame.get("error") or {}).get("code")}}
        return {"type": kind}


def _split_by_actions(turn: Turn) -> list[tuple[dict[str, Any] | None, list[Event]]]:
    """Pair the send and each later action with the events that followed it."""
    actions = turn.actions
    events = turn.events
    groups: list[tuple[dict[str, Any] | None, list[Event]]] = []
    boundaries = [a.at for a in actions] + [float("inf")]
    start = 0.0
    for position, limit in enumerate(boundaries):
        chunk = [e for e in events if start <= e.at < limit]
        groups.append((None if position == 0 else actions[position - 1].frame, chunk))
        start = limit
    return groups


def build_scenario(
    turns: Sequence[Turn],
    *,
    server: NotebookServer | None = None,
    create_fields: dict[str, Any] | None = None,
    name: str = "captured-session",
) -> dict[str, Any]:
    # A message the server rejected before the turn started (TURN_IN_PROGRESS, an
    # invalid field) never reached the model; it is left out rather than replayed.
    turns = [turn for turn in turns if not _rejected(turn)]
    if not turns:
        raise ExportError("there are no turns to export; send a message first")
    script: list[dict[str, Any]] = []
    results: dict[str, str] = {}
    errored_tools: set[str] = set()
    confirm_tools: set[str] = set()
    specs: dict[str, dict[str, Any]] = {}

    for turn in turns:
        if turn.status in ("running", "error"):
            detail = f" ({turn.error['code']})" if turn.error else ""
            raise ExportError(
                f"turn {turn.request_id} is {turn.status}{detail}; only turns that completed, parked or were cancelled replay"
            )
        calls = turn.llm_requests
        if not calls:
            raise ExportError(
                f"turn {turn.request_id} has no recorded model calls; export turns of a server running in this kernel"
            )
        for call in calls:
            for spec in call.tools:
                function = spec.get("function") or {}
                if function.get("name"):
                    specs[function["name"]] = function
            if call.finished is None or call.error:
                continue
            if len(call.tool_calls) > 1:
                names = ", ".join(c["name"] for c in call.tool_calls)
                raise ExportError(
                    f"a model answer in turn {turn.request_id} called several tools at once ({names}); "
                    "the scenario format stores one tool call per answer"
                )
            script.append(call.response())
        for event in turn.events:
            if event.type == "write_confirmation_required":
                confirm_tools.add(str(((event.frame.get("data") or {}).get("data") or {}).get("toolId")))
        for tool_call in turn.tool_calls:
            if tool_call.name in KINDS:
                continue
            if tool_call.is_error:
                errored_tools.add(tool_call.name)
                results.setdefault(tool_call.name, tool_call.result or "")
                continue
            seen = results.get(tool_call.name)
            if seen is not None and tool_call.name not in errored_tools and seen != tool_call.result:
                raise ExportError(
                    f"tool {tool_call.name} returned different results in these turns; the scenario format stores one "
                    "result per tool, so export the turns separately with turn.to_scenario(path)"
                )
            results[tool_call.name] = tool_call.result or ""

    confirm_tools.discard("None")
    tools = []
    for tool_name in sorted(set(results) | confirm_tools):
        spec = specs.get(tool_name, {})
        tools.append(
            {
                "name": tool_name,
                "description": spec.get("description", ""),
                "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
                "result": results.get(tool_name, ""),
            }
        )

    create = {"action": "create_conversation_session", "requestId": "create", "agentId": "00000000-0000-4000-8000-000000000001"}
    supports = (create_fields or {}).get("supports")
    if supports is not None:
        create["supports"] = supports
    steps: list[dict[str, Any]] = [
        {"send": create, "expect": [{"type": "immediate_response", "status": 200, "capture": {"sessionId": "data.sessionId"}}]}
    ]
    builder = _Builder()
    for number, turn in enumerate(turns, start=1):
        request_id = f"turn-{number}"
        for action, events in _split_by_actions(turn):
            if action is None:
                send = {"action": "send_message", "requestId": request_id, "sessionId": "{{sessionId}}", "message": turn.message}
            else:
                send = {key: value for key, value in action.items() if key not in ("requestId", "sessionId")}
                send.update({"requestId": request_id, "sessionId": "{{sessionId}}"})
                if "interactionId" in send and builder.interaction_placeholder:
                    send["interactionId"] = "{{" + builder.interaction_placeholder + "}}"
            steps.append({"send": send, "expect": builder.matchers(events, errored_tools)})

    scenario: dict[str, Any] = {
        "name": name,
        "description": (
            f"Captured by smooth-nb on {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from "
            f"{len(turns)} turn(s): the model's answers replay from mockLlmScript and each tool returns the result it "
            "returned then. Text the model streamed before a tool call is not replayed, and a tool that raised "
            "replays its error text as a normal result."
        ),
        "server": {"tools": tools, "confirmTools": sorted(confirm_tools)},
        "mockLlmScript": script,
        "steps": steps,
    }
    if server is not None and len(server.knowledge):
        knowledge = server.handle.state.knowledge
        _check_citations_still_hold(turns, knowledge)
        scenario["server"]["knowledge"] = [{"source": source, "content": content} for source, content in knowledge.documents()]
    return scenario


def _rejected(turn: Turn) -> bool:
    """Return whether the server answered the send with an error and no 202 acknowledgement."""
    events = turn.events
    return bool(events) and events[0].type == "error" and not any(
        e.type == "immediate_response" and e.frame.get("status") == 202 for e in events
    )


def _check_citations_still_hold(turns: Sequence[Turn], knowledge: Any) -> None:
    """Raise ExportError when today's knowledge base would cite differently than the turns did.

    The scenario carries the knowledge base as it is now, and replay asserts the
    citations the turns had; a document added or removed since then breaks that.
    """
    from smooth_nb.server.turns import KNOWLEDGE_TOP_K

    for turn in turns:
        recorded = [c.get("id") for c in turn.citations]
        if not recorded:
            continue
        now = [hit.source for hit in knowledge.query(turn.message, KNOWLEDGE_TOP_K)]
        if now != recorded:
            raise ExportError(
                f"the knowledge base changed since turn {turn.request_id}: it cited {recorded}, and would now cite {now}. "
                "Export right after the turns, or remove the documents added since."
            )


def write_scenario(
    turns: Sequence[Turn],
    path: str | Path,
    *,
    server: NotebookServer | None = None,
    create_fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the scenario of ``turns`` and write it to ``path`` as JSON; return it."""
    target = Path(path)
    scenario = build_scenario(turns, server=server, create_fields=create_fields, name=target.stem)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(scenario, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return scenario

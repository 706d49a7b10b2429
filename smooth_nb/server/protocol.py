"""Wire frames of the smooth-operator protocol, and checks on incoming fields.

Every server-to-client frame is built here, so the shapes the JSON Schemas
describe live in one place. The inbound helpers turn a wrong type or a missing
field into a :class:`ProtocolError` carrying ``VALIDATION_ERROR``, which the
dispatcher sends back as an ``error`` event with the ``requestId`` echoed.

Nothing here imports the engine, tornado or IPython.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

#: Error codes this server sends. Clients match on these strings.
VALIDATION_ERROR = "VALIDATION_ERROR"
UNSUPPORTED_ACTION = "UNSUPPORTED_ACTION"
SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
TURN_FAILED = "TURN_FAILED"
TURN_IN_PROGRESS = "TURN_IN_PROGRESS"
SERVER_SHUTTING_DOWN = "SERVER_SHUTTING_DOWN"
NO_PENDING_CONFIRMATION = "NO_PENDING_CONFIRMATION"
NO_PENDING_INTERACTION = "NO_PENDING_INTERACTION"
INTERACTION_MISMATCH = "INTERACTION_MISMATCH"
SESSIONS_FULL = "SESSIONS_FULL"
CONVERSATION_FULL = "CONVERSATION_FULL"
SKILL_NOT_FOUND = "SKILL_NOT_FOUND"

#: ``send_message.message`` bounds from the protocol's send-message schema.
MESSAGE_MAX_CHARS = 10_000

class ProtocolError(Exception):
    """A client error that becomes one ``error`` event; the connection stays open."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------
# Outbound frames
# ---------------------------------------------------------------------------


def immediate_response(request_id: str | None, status: int, data: dict[str, Any]) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "immediate_response", "status": status, "data": data, "timestamp": now_ms()}
    if request_id is not None:
        frame["requestId"] = request_id
    return frame


def error(request_id: str | None, code: str, message: str) -> dict[str, Any]:
    """Build an ``error`` event; the descriptor sits both top-level and in ``data``."""
    descriptor = {"code": code, "message": message}
    data: dict[str, Any] = {"error": descriptor}
    frame: dict[str, Any] = {"type": "error", "error": descriptor, "data": data, "timestamp": now_ms()}
    if request_id is not None:
        frame["requestId"] = request_id
        data["requestId"] = request_id
    return frame


def pong(request_id: str | None) -> dict[str, Any]:
    stamp = now_ms()
    frame: dict[str, Any] = {"type": "pong", "timestamp": stamp, "data": {"timestamp": stamp}}
    if request_id is not None:
        frame["requestId"] = request_id
    return frame


def stream_token(request_id: str, token: str) -> dict[str, Any]:
    return {"type": "stream_token", "requestId": request_id, "token": token, "data": {"requestId": request_id, "token": token}}


def stream_chunk(request_id: str, node: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "stream_chunk",
        "requestId": request_id,
        "node": node,
        "data": {"requestId": request_id, "node": node, "state": state},
    }


def eventual_response(request_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "eventual_response",
        "requestId": request_id,
        "status": 200,
        "data": {"requestId": request_id, "status": 200, "data": data},
        "timestamp": now_ms(),
    }


def cancelled(request_id: str) -> dict[str, Any]:
    """Build the terminal ``cancelled`` event (499) of a cancelled turn."""
    return {
        "type": "cancelled",
        "requestId": request_id,
        "status": 499,
        "data": {"requestId": request_id, "status": 499},
        "timestamp": now_ms(),
    }


def keepalive(request_id: str, *, turn_running: bool) -> dict[str, Any]:
    """Build a ``keepalive``; the top-level ``requestId`` is set only while a turn runs."""
    frame: dict[str, Any] = {"type": "keepalive", "data": {"requestId": request_id}, "timestamp": now_ms()}
    if turn_running:
        frame["requestId"] = request_id
    return frame


def turn_event(kind: str, request_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Build an event whose payload sits in ``data.data`` beside ``data.requestId``.

    This is the shape of ``write_confirmation_required``, ``interaction_required``,
    ``interaction_invalid`` and ``otp_invalid``.
    """
    return {"type": kind, "requestId": request_id, "data": {"requestId": request_id, "data": payload}, "timestamp": now_ms()}


def agent_response(text: str) -> dict[str, Any]:
    """Build the ``GeneralAgentResponse`` a plain-text turn reports.

    The local flavor runs no judge model, so the scores are neutral and the
    status is ``resolved``; ``responseParts`` carries the whole reply as one part.
    """
    return {
        "responseParts": [text],
        "customerHappinessScore": 0.5,
        "needsSatisfactionScore": 0.5,
        "requestSummary": "",
        "resolutionStatus": "resolved",
        "suggestedNextActions": [],
    }


# ---------------------------------------------------------------------------
# Inbound field checks
# ---------------------------------------------------------------------------


def _invalid(field: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(VALIDATION_ERROR, f"invalid '{field}': expected {expected}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def required_str(frame: dict[str, Any], field: str) -> str:
    if field not in frame:
        raise ProtocolError(VALIDATION_ERROR, f"missing required field '{field}'")
    value = frame[field]
    if not isinstance(value, str):
        raise _invalid(field, "a string", value)
    return value


def _optional(frame: dict[str, Any], field: str, kind: type, expected: str) -> Any:
    """Return ``frame[field]``, None when it is absent or null; raise VALIDATION_ERROR unless it is a ``kind``."""
    value = frame.get(field)
    if value is None:
        return None
    if not isinstance(value, kind):
        raise _invalid(field, expected, value)
    return value


def optional_str(frame: dict[str, Any], field: str) -> str | None:
    return _optional(frame, field, str, "a string")


def optional_bool(frame: dict[str, Any], field: str) -> bool | None:
    return _optional(frame, field, bool, "a boolean")


def optional_int(frame: dict[str, Any], field: str, *, minimum: int, maximum: int) -> int | None:
    value = frame.get(field)
    if value is None:
        return None
    # bool is an int subclass in Python, but never a valid count on the wire.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, f"an integer from {minimum} to {maximum}", value)
    if not minimum <= value <= maximum:
        raise ProtocolError(VALIDATION_ERROR, f"invalid '{field}': {value} is outside {minimum}..{maximum}")
    return value


def optional_object(frame: dict[str, Any], field: str) -> dict[str, Any] | None:
    return _optional(frame, field, dict, "an object")


def optional_list(frame: dict[str, Any], field: str) -> list[Any] | None:
    return _optional(frame, field, list, "an array")


def optional_str_list(frame: dict[str, Any], field: str) -> list[str] | None:
    value = _optional(frame, field, list, "an array of strings")
    if value is not None and not all(isinstance(item, str) for item in value):
        raise _invalid(field, "an array of strings", value)
    return value

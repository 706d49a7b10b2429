"""The protocol from outside: a real WebSocket client against an in-process local server.

Every frame the server sends is validated against the protocol's JSON Schemas
by ``WireClient``.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from smooth_nb.engine import ModelSettings
from smooth_nb.server import LocalServer
from tests.support.wire import WireClient, tokens

MOCK_REPLY = "Hello from the mock model, with an emoji beyond the BMP: 🛰️ done."


@pytest.fixture
async def server():
    handle = await (
        LocalServer.builder().addr("127.0.0.1:0").seed_kb(True).model(ModelSettings(mode="mock", mock_reply=MOCK_REPLY)).spawn()
    )
    yield handle
    await handle.shutdown()


@pytest.fixture
async def client(server):
    wire = await WireClient.connect(server.ws_url)
    yield wire
    await wire.close()


async def test_ping_returns_pong_with_request_id(client):
    reply = await client.request({"action": "ping", "requestId": "p-1"})

    assert reply["type"] == "pong"
    assert reply["requestId"] == "p-1"
    assert isinstance(reply["data"]["timestamp"], int)


async def test_create_then_get_session(client):
    created = await client.request(
        {"action": "create_conversation_session", "agentId": str(uuid.uuid4()), "userName": "Ada"}
    )
    session_id = created["data"]["sessionId"]

    fetched = await client.request({"action": "get_session", "sessionId": session_id})

    assert created["status"] == 200
    assert fetched["type"] == "immediate_response"
    assert fetched["data"]["sessionId"] == session_id
    assert fetched["data"]["conversationId"] == created["data"]["conversationId"]
    assert fetched["data"]["status"] == "idle"


async def test_streamed_turn_reassembles_reply(client):
    session_id = await client.create_session()

    frames = await client.turn(session_id, "hi there", requestId="r-msg")

    assert frames[0]["type"] == "immediate_response"
    assert frames[0]["status"] == 202
    assert tokens(frames) == MOCK_REPLY
    final = frames[-1]
    assert final["type"] == "eventual_response"
    assert final["requestId"] == "r-msg"
    assert final["data"]["data"]["response"]["responseParts"] == [MOCK_REPLY]
    assert final["data"]["data"]["usage"] == {"promptTokens": 10, "completionTokens": 5}
    assert all(f.get("requestId") == "r-msg" for f in frames), "every turn frame echoes the requestId"


async def test_unstreamed_turn_sends_no_tokens(client):
    session_id = await client.create_session()

    frames = await client.turn(session_id, "hi", stream=False)

    assert [f["type"] for f in frames] == ["immediate_response", "eventual_response"]
    assert frames[-1]["data"]["data"]["response"]["responseParts"] == [MOCK_REPLY]


async def test_grounded_turn_cites_returns_policy(client):
    session_id = await client.create_session()

    frames = await client.turn(session_id, "How long do I have to return an order?")

    citations = frames[-1]["data"]["data"]["citations"]
    assert citations[0]["id"] == "policies/returns.md"
    assert citations[0]["title"] == "policies/returns.md"
    assert "17 days" in citations[0]["snippet"]
    assert all(c["id"] != "policies/shipping.md" for c in citations), "shipping shares no term with a returns question"


async def test_turn_without_knowledge_has_no_citations():
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(ModelSettings(mode="mock", mock_reply="ok")).spawn()
    try:
        wire = await WireClient.connect(handle.ws_url)
        session_id = await wire.create_session()
        frames = await wire.turn(session_id, "How long do I have to return an order?")
        await wire.close()
    finally:
        await handle.shutdown()

    assert "citations" not in frames[-1]["data"]["data"]


async def test_history_pages_newest_first(client):
    session_id = await client.create_session()
    for text in ("first", "second", "third"):
        await client.turn(session_id, text)

    page_one = await client.request({"action": "get_conversation_messages", "sessionId": session_id, "limit": 4})
    cursor = page_one["data"]["nextCursor"]
    page_two = await client.request(
        {"action": "get_conversation_messages", "sessionId": session_id, "limit": 4, "cursor": cursor}
    )

    first_page = page_one["data"]["messages"]
    assert [m["direction"] for m in first_page] == ["outbound", "inbound", "outbound", "inbound"]
    assert first_page[1]["content"]["text"] == "third"
    assert page_one["data"]["hasMore"] is True
    assert [m["content"]["text"] for m in page_two["data"]["messages"]] == [MOCK_REPLY, "first"]
    assert page_two["data"]["hasMore"] is False
    assert page_two["data"]["nextCursor"] is None


async def test_history_of_new_session_is_empty(client):
    session_id = await client.create_session()

    reply = await client.request({"action": "get_conversation_messages", "sessionId": session_id})

    assert reply["data"] == {"messages": [], "nextCursor": None, "hasMore": False}


@pytest.mark.parametrize(
    "frame, code",
    [
        ({"requestId": "e-1", "message": "no action"}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": 42}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": "teleport"}, "UNSUPPORTED_ACTION"),
        ({"requestId": "e-1", "action": "get_session"}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": "get_session", "sessionId": 7}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": "get_session", "sessionId": str(uuid.uuid4())}, "SESSION_NOT_FOUND"),
        ({"requestId": "e-1", "action": "create_conversation_session"}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": "create_conversation_session", "agentId": ["x"]}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": "create_conversation_session", "agentId": "a", "supports": "x"}, "VALIDATION_ERROR"),
        ({"requestId": "e-1", "action": "send_message", "sessionId": str(uuid.uuid4()), "message": "hi"}, "SESSION_NOT_FOUND"),
        ({"requestId": "e-1", "action": "get_conversation_messages", "sessionId": "s", "limit": "5"}, "VALIDATION_ERROR"),
    ],
)
async def test_bad_frame_gets_error_with_request_id(client, frame, code):
    reply = await client.request(frame)

    assert reply["type"] == "error"
    assert reply["error"]["code"] == code
    assert reply["requestId"] == "e-1"
    assert reply["error"]["message"], "the error says what went wrong"


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', "null", b"\x00binary"])
async def test_non_object_frame_gets_validation_error(client, raw):
    await client.send(raw)
    reply = await client.recv()

    assert reply["type"] == "error"
    assert reply["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "message, field",
    [("", "message"), ("   ", "message"), (None, "message"), (5, "message"), ("x" * 10_001, "message")],
)
async def test_bad_message_field_is_rejected(client, message, field):
    session_id = await client.create_session()
    frame = {"action": "send_message", "requestId": "m-1", "sessionId": session_id}
    if message is not None:
        frame["message"] = message

    reply = await client.request(frame)

    assert reply["error"]["code"] == "VALIDATION_ERROR"
    assert field in reply["error"]["message"]


async def test_connection_survives_errors(client):
    await client.send("garbage")
    await client.recv()
    session_id = await client.create_session()

    frames = await client.turn(session_id, "still there?")

    assert frames[-1]["type"] == "eventual_response"


async def test_no_model_gives_llm_unavailable():
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(ModelSettings(mode="unavailable")).spawn()
    try:
        wire = await WireClient.connect(handle.ws_url)
        session_id = await wire.create_session()
        reply = await wire.request({"action": "send_message", "requestId": "m-1", "sessionId": session_id, "message": "hi"})
        await wire.close()
    finally:
        await handle.shutdown()

    assert reply["type"] == "error"
    assert reply["error"]["code"] == "LLM_UNAVAILABLE"
    assert reply["requestId"] == "m-1"
    assert "SMOOAI_GATEWAY_KEY" in reply["error"]["message"]
    assert "SMOOAI_GATEWAY_URL" in reply["error"]["message"]


async def test_second_turn_while_running_is_rejected(server):
    wire = await WireClient.connect(server.ws_url)
    session_id = await wire.create_session()
    await wire.send({"action": "send_message", "requestId": "t-1", "sessionId": session_id, "message": "one"})
    await wire.send({"action": "send_message", "requestId": "t-2", "sessionId": session_id, "message": "two"})

    frames = [await wire.recv() for _ in range(2)]
    rejected = [f for f in frames if f.get("requestId") == "t-2"]
    await wire.close()

    assert frames[0]["status"] == 202
    assert rejected[0]["type"] == "error"
    assert rejected[0]["error"]["code"] == "TURN_IN_PROGRESS"


async def test_turns_on_two_connections_interleave(server):
    first = await WireClient.connect(server.ws_url)
    second = await WireClient.connect(server.ws_url)
    first_session = await first.create_session()
    second_session = await second.create_session()

    results = await asyncio.gather(first.turn(first_session, "a"), second.turn(second_session, "b"))
    await first.close()
    await second.close()

    assert all(tokens(frames) == MOCK_REPLY for frames in results)


async def test_health_reports_model_mode(server):
    from tornado.httpclient import AsyncHTTPClient

    response = await AsyncHTTPClient().fetch(server.http_url + "/health")

    assert json.loads(response.body)["model"] == "mock"

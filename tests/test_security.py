"""Guards seen from outside: Host, Origin, tokens, the admin API, bad input, caps and lifecycle."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import uuid

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smooth_nb.engine import ModelSettings
from smooth_nb.server import LocalServer
from tests.support.cli import serve
from tests.support.scenarios import corpus_scenarios
from tests.support.wire import AGENT_ID, WireClient, tokens

MOCK = ModelSettings(mode="mock", mock_reply="guarded reply")
TOKEN = "test-token-8f2c"


async def spawn(**config):
    builder = LocalServer.builder().addr("127.0.0.1:0").model(MOCK)
    if "token" in config:
        builder.auth(config.pop("token"))
    if config:
        builder.config(**config)
    return await builder.spawn()


def http_request(port: int, path: str, *, host: str | None = None, headers: dict | None = None, method="GET", body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = dict(headers or {})
    if host is not None:
        all_headers["Host"] = host
    connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), payload


# -- Host (DNS rebinding) --------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/", "/ws", "/admin/health", "/admin/me"])
async def test_forged_host_is_refused(path):
    server = await spawn(serve_widget=True)
    try:
        status, _, body = await asyncio.to_thread(http_request, server.port, path, host="rebind.example:80")
    finally:
        await server.shutdown()

    assert status == 403
    assert json.loads(body)["error"]["code"] == "FORBIDDEN_HOST"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
async def test_loopback_host_names_are_accepted(host):
    server = await spawn()
    try:
        status, _, _ = await asyncio.to_thread(http_request, server.port, "/health", host=f"{host}:{server.port}")
    finally:
        await server.shutdown()

    assert status == 200


async def test_configured_host_name_is_accepted():
    server = await spawn(allowed_hosts=("devbox.internal",))
    try:
        status, _, _ = await asyncio.to_thread(http_request, server.port, "/health", host="devbox.internal:8787")
    finally:
        await server.shutdown()

    assert status == 200


# -- Origin ------------------------------------------------------------------------


async def test_foreign_origin_cannot_open_websocket():
    server = await spawn()
    try:
        with pytest.raises(websockets.InvalidStatus) as rejected:
            await websockets.connect(server.ws_url, origin="http://attacker.example")
        with pytest.raises(websockets.InvalidStatus) as other_local_app:
            await websockets.connect(server.ws_url, origin="http://localhost:9")
    finally:
        await server.shutdown()

    assert rejected.value.response.status_code == 403
    assert other_local_app.value.response.status_code == 403


async def test_own_and_configured_origins_are_accepted():
    server = await spawn(allowed_origins=("http://localhost:8888",))
    try:
        own = await websockets.connect(server.ws_url, origin=f"http://127.0.0.1:{server.port}")
        configured = await websockets.connect(server.ws_url, origin="http://localhost:8888")
        server.allow_origin("https://lab.example.org")
        added_later = await websockets.connect(server.ws_url, origin="https://lab.example.org")
        for socket in (own, configured, added_later):
            await socket.close()
    finally:
        await server.shutdown()


def test_allow_origin_rejects_non_origin():
    async def attempt():
        server = await spawn()
        try:
            server.allow_origin("localhost")
        finally:
            await server.shutdown()

    with pytest.raises(ValueError, match="invalid origin"):
        asyncio.run(attempt())


# -- tokens and the admin API ----------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
async def test_admin_rejects_missing_or_wrong_token(headers):
    server = await spawn(token=TOKEN)
    try:
        status, _, body = await asyncio.to_thread(http_request, server.port, "/admin/conversations", headers=headers)
    finally:
        await server.shutdown()

    assert status == 401
    assert json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    assert TOKEN not in body.decode()


async def test_admin_health_needs_no_token():
    server = await spawn(token=TOKEN)
    try:
        status, _, body = await asyncio.to_thread(http_request, server.port, "/admin/health")
    finally:
        await server.shutdown()

    assert status == 200
    assert json.loads(body) == {"status": "ok"}


async def test_admin_lists_conversations_and_messages():
    server = await spawn(token=TOKEN, seed_kb=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wire = await WireClient.connect(f"{server.ws_url}?token={TOKEN}")
        session_id = await wire.create_session()
        await wire.turn(session_id, "hello admin")
        await wire.close()
        _, _, me = await asyncio.to_thread(http_request, server.port, "/admin/me", headers=auth)
        _, _, listing = await asyncio.to_thread(http_request, server.port, "/admin/conversations", headers=auth)
        conversation_id = json.loads(listing)["conversations"][0]["conversationId"]
        _, _, messages = await asyncio.to_thread(
            http_request, server.port, f"/admin/conversations/{conversation_id}/messages", headers=auth
        )
        missing, _, _ = await asyncio.to_thread(
            http_request, server.port, f"/admin/conversations/{uuid.uuid4()}/messages", headers=auth
        )
        _, _, sets = await asyncio.to_thread(http_request, server.port, "/admin/document-sets", headers=auth)
        _, _, runs = await asyncio.to_thread(http_request, server.port, "/admin/indexing/runs", headers=auth)
    finally:
        await server.shutdown()

    assert json.loads(me) == {"principal": "local-token-holder", "auth": "local-token"}
    assert json.loads(listing)["conversations"][0]["messageCount"] == 2
    assert [m["content"]["text"] for m in json.loads(messages)["messages"]] == ["hello admin", "guarded reply"]
    assert missing == 404
    assert json.loads(sets)["documentSets"] == [
        {"id": "policies", "documents": 2, "sources": ["policies/returns.md", "policies/shipping.md"]}
    ]
    assert json.loads(runs)["runs"][0]["documents"] == 2


async def test_admin_publish_reaches_session_socket():
    server = await spawn(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        wire = await WireClient.connect(f"{server.ws_url}?token={TOKEN}")
        session_id = await wire.create_session()
        event = {"type": "stream_token", "requestId": "pushed", "token": "hi", "data": {"requestId": "pushed", "token": "hi"}}
        body = json.dumps({"sessionId": session_id, "event": event})
        status, _, reply = await asyncio.to_thread(http_request, server.port, "/admin/publish", method="POST", headers=auth, body=body)
        received = await wire.recv()
        unknown, _, _ = await asyncio.to_thread(
            http_request, server.port, "/admin/publish", method="POST", headers=auth,
            body=json.dumps({"sessionId": "nope", "event": event}),
        )
        invalid, _, _ = await asyncio.to_thread(
            http_request, server.port, "/admin/publish", method="POST", headers=auth, body="{not json"
        )
        await wire.close()
    finally:
        await server.shutdown()

    assert status == 200
    assert json.loads(reply) == {"delivered": 1}
    assert received == event
    assert unknown == 404
    assert invalid == 400


async def test_admin_preflight_only_for_allowed_origins():
    server = await spawn(token=TOKEN, allowed_origins=("http://localhost:8888",))
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    try:
        allowed_status, allowed_headers, _ = await asyncio.to_thread(
            http_request, server.port, "/admin/me", method="OPTIONS", headers={**preflight, "Origin": "http://localhost:8888"}
        )
        denied_status, denied_headers, _ = await asyncio.to_thread(
            http_request, server.port, "/admin/me", method="OPTIONS", headers={**preflight, "Origin": "http://attacker.example"}
        )
    finally:
        await server.shutdown()

    assert allowed_status == 204
    assert allowed_headers["Access-Control-Allow-Origin"] == "http://localhost:8888"
    assert "Authorization" in allowed_headers["Access-Control-Allow-Headers"]
    assert denied_status == 403
    assert "Access-Control-Allow-Origin" not in denied_headers


# -- bad input -------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
ACTIONS = ["ping", "create_conversation_session", "get_session", "get_conversation_messages", "send_message",
           "cancel", "confirm_tool_action", "submit_interaction", "verify_otp"]
FIELDS = ["sessionId", "message", "agentId", "limit", "cursor", "stream", "approved", "interactionId", "values",
          "declined", "code", "supports", "metadata", "userName", "requestId"]
junk_objects = st.fixed_dictionaries(
    {"action": st.sampled_from(ACTIONS) | json_values},
    optional={field: json_values for field in FIELDS},
)
junk_frames = (
    junk_objects.map(json.dumps)
    | json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps)
    | st.text(max_size=40).filter(lambda t: not t.strip().startswith(("{", "[", '"')) or t.strip() == "")
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(junk_frames, min_size=1, max_size=8))
def test_junk_frames_get_errors_and_socket_still_serves(frames):
    async def scenario():
        server = await spawn()
        answers = []
        try:
            wire = await WireClient.connect(server.ws_url)
            for index, raw in enumerate(frames):
                await wire.send(raw)
                # Frames are handled in order, so everything before this pong answers the junk frame.
                await wire.send({"action": "ping", "requestId": f"probe-{index}"})
                replies = []
                while True:
                    frame = await wire.recv()
                    if frame["type"] == "pong" and frame.get("requestId") == f"probe-{index}":
                        break
                    replies.append(frame)
                answers.append((raw, replies))
            session_id = await wire.create_session()
            turn = await wire.turn(session_id, "still working?", requestId="real-turn")
            await wire.close()
            return answers, turn
        finally:
            await server.shutdown()

    answers, turn = asyncio.run(scenario())

    assert tokens(turn) == "guarded reply"
    assert turn[-1]["type"] == "eventual_response"
    for raw, replies in answers:
        assert len(replies) <= 1, f"one frame got several answers: {raw!r} -> {replies}"
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("action"), str):
            assert [r["error"]["code"] for r in replies] == ["VALIDATION_ERROR"], f"{raw!r} -> {replies}"
        for reply in replies:
            if reply["type"] != "error":
                continue
            assert reply["error"]["message"], "an error carries a message"
            assert reply["error"]["code"] != "INTERNAL_ERROR", f"junk reached a code path that crashed: {raw!r}"
            if isinstance(parsed, dict) and isinstance(parsed.get("requestId"), str):
                assert reply["requestId"] == parsed["requestId"], "the error echoes the frame's requestId"


async def test_error_echoes_request_id_of_junk():
    server = await spawn()
    try:
        wire = await WireClient.connect(server.ws_url)
        reply = await wire.request({"action": "send_message", "requestId": "junk-1", "sessionId": {"a": 1}, "message": 3})
        await wire.close()
    finally:
        await server.shutdown()

    assert reply["error"]["code"] == "VALIDATION_ERROR"
    assert reply["requestId"] == "junk-1"


async def test_huge_frame_closes_only_its_socket():
    server = await spawn()
    try:
        victim = await websockets.connect(server.ws_url, max_size=None)
        bystander = await WireClient.connect(server.ws_url)
        try:
            await victim.send("x" * (8 * 1024 * 1024))
        except (websockets.ConnectionClosed, ConnectionResetError):
            pass  # the server may close before the client finishes writing
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(victim.recv(), 10)
        session_id = await bystander.create_session()
        turn = await bystander.turn(session_id, "are you fine?")
        await bystander.close()
    finally:
        await server.shutdown()

    assert closed.value.rcvd is not None, "the server sent a close frame"
    assert closed.value.rcvd.code == 1009
    assert tokens(turn) == "guarded reply"


# -- bounded memory -------------------------------------------------------------------


async def test_session_cap_evicts_oldest_idle():
    server = await spawn(max_sessions=200)
    try:
        wire = await WireClient.connect(server.ws_url)
        first = await wire.create_session()
        ids = [await wire.create_session() for _ in range(2000)]
        stale = await wire.request({"action": "get_session", "sessionId": first})
        fresh = await wire.request({"action": "get_session", "sessionId": ids[-1]})
        await wire.close()
        stored = len(server.state.store.sessions)
    finally:
        await server.shutdown()

    assert stored == 200
    assert stale["error"]["code"] == "SESSION_NOT_FOUND"
    assert fresh["type"] == "immediate_response"


async def test_conversation_cap_gives_clear_error():
    server = await spawn(max_messages=6)
    try:
        wire = await WireClient.connect(server.ws_url)
        session_id = await wire.create_session()
        turns = [await wire.turn(session_id, f"message {n}") for n in range(4)]
        await wire.close()
    finally:
        await server.shutdown()

    assert all(t[-1]["type"] == "eventual_response" for t in turns[:3])
    assert turns[3][-1]["error"]["code"] == "CONVERSATION_FULL"
    assert "new session" in turns[3][-1]["error"]["message"]


async def test_client_that_stops_reading_is_closed():
    server = await spawn(token=TOKEN, max_pending_bytes=256 * 1024)
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        reader = await websockets.connect(f"{server.ws_url}?token={TOKEN}", max_queue=1, max_size=None)
        await reader.send(json.dumps({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT_ID}))
        session_id = json.loads(await reader.recv())["data"]["sessionId"]
        blob = "x" * (100 * 1024)
        event = {"type": "stream_token", "requestId": "flood", "token": blob, "data": {"requestId": "flood", "token": blob}}
        body = json.dumps({"sessionId": session_id, "event": event})
        statuses = set()
        for _ in range(100):
            status, _, _ = await asyncio.to_thread(http_request, server.port, "/admin/publish", method="POST", headers=auth, body=body)
            statuses.add(status)
        # A closing socket leaves the backplane once tornado gives up on the close handshake.
        for _ in range(200):
            if not server.state.subscribers(session_id):
                break
            await asyncio.sleep(0.05)
        still_subscribed = bool(server.state.subscribers(session_id))
    finally:
        await server.shutdown()

    assert statuses == {200}, "every publish was accepted, so the frames did reach the server's queue"
    assert not still_subscribed, "the server kept buffering for a client that never reads"


# -- lifecycle -------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_start_stop_cycles_leak_nothing():
    async def cycle():
        server = await spawn()
        wire = await WireClient.connect(server.ws_url)
        await wire.create_session()
        await server.shutdown()
        await wire.socket.wait_closed()

    for _ in range(20):
        await cycle()
    await asyncio.sleep(0.05)
    fds_before, tasks_before = open_fds(), len(asyncio.all_tasks())
    for _ in range(200):
        await cycle()
    await asyncio.sleep(0.05)
    fds_after, tasks_after = open_fds(), len(asyncio.all_tasks())

    assert fds_after <= fds_before, f"file descriptors grew from {fds_before} to {fds_after}"
    assert tasks_after <= tasks_before, f"tasks grew from {tasks_before} to {tasks_after}"


async def test_sigterm_ends_parked_turn_and_closes_sockets():
    path = next(p for p in corpus_scenarios() if p.stem == "hitl-write-confirmation")
    with serve("--scenario", str(path), "--keepalive", "0") as server:
        wire = await WireClient.connect(server.ws_url)
        session_id = await wire.create_session()
        await wire.send({"action": "send_message", "requestId": "parked", "sessionId": session_id, "message": "delete 42"})
        parked = [await wire.recv() for _ in range(3)]
        server.process.send_signal(signal.SIGTERM)
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(await wire.recv())
        code = server.process.wait(15)

    assert parked[1]["type"] == "write_confirmation_required"
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["error"]["code"] == "SERVER_SHUTTING_DOWN"
    assert frames[0]["requestId"] == "parked"
    assert closed.value.rcvd.code == 1001
    assert code == 0

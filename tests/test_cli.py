"""``python -m smooth_nb serve``: a real process, real clients, a real stand-in gateway."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

from smooth_operator import SmoothAgentClient
from smooth_operator.transport import WebSocketTransport

from tests.support.cli import clean_env, serve
from tests.support.stand_in_gateway import run_stand_in_gateway
from tests.support.wire import WireClient, assert_valid_event, tokens

RETURNS_QUESTION = "How long do I have to return an order?"


async def test_serve_prints_listening_line_and_accepts():
    with serve() as server:
        wire = await WireClient.connect(server.ws_url)
        reply = await wire.request({"action": "ping"})
        await wire.close()

    assert server.ws_url.startswith("ws://127.0.0.1:")
    assert reply["type"] == "pong"


def test_sigterm_stops_and_frees_port():
    with serve() as server:
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(15)
        with socket.socket() as probe:
            refused = probe.connect_ex(("127.0.0.1", server.port)) != 0

    assert code == 0
    assert refused


async def test_no_key_turn_names_env_vars():
    with serve() as server:
        wire = await WireClient.connect(server.ws_url)
        session_id = await wire.create_session()
        frames = await wire.turn(session_id, "hi", requestId="m-1")
        await wire.close()

    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["error"]["code"] == "LLM_UNAVAILABLE"
    assert frames[0]["requestId"] == "m-1"
    assert "SMOOAI_GATEWAY_KEY" in frames[0]["error"]["message"]


async def test_mock_reply_answers_every_turn():
    with serve("--mock-reply", "Always this ✨ answer") as server:
        wire = await WireClient.connect(server.ws_url)
        session_id = await wire.create_session()
        first = await wire.turn(session_id, "one")
        second = await wire.turn(session_id, "two")
        await wire.close()

    assert tokens(first) == "Always this ✨ answer"
    assert tokens(second) == "Always this ✨ answer"


async def test_gateway_turn_is_grounded_and_cited(tmp_path):
    log = tmp_path / "gateway.jsonl"
    with run_stand_in_gateway(key="cli-test-key", log_path=log) as gateway:
        env = clean_env(SMOOAI_GATEWAY_URL=gateway.base_url, SMOOAI_GATEWAY_KEY="cli-test-key", SMOOTH_AGENT_MODEL="stand-in")
        with serve("--seed-kb", env=env) as server:
            wire = await WireClient.connect(server.ws_url)
            session_id = await wire.create_session()
            frames = await wire.turn(session_id, RETURNS_QUESTION)
            await wire.close()
        requests = gateway.requests()

    final = frames[-1]["data"]["data"]
    assert "17 days" in tokens(frames)
    assert final["citations"][0]["id"] == "policies/returns.md"
    assert requests[-1]["authorization_ok"] is True
    assert requests[-1]["body"]["model"] == "stand-in"
    assert requests[-1]["body"]["stream"] is True
    assert "server output never shows the key", "cli-test-key" not in "".join(server.output)


async def test_gateway_rejecting_key_ends_turn_with_error():
    with run_stand_in_gateway(key="right-key") as gateway:
        env = clean_env(SMOOAI_GATEWAY_URL=gateway.base_url, SMOOAI_GATEWAY_KEY="wrong-key")
        with serve(env=env) as server:
            wire = await WireClient.connect(server.ws_url)
            session_id = await wire.create_session()
            frames = await wire.turn(session_id, "hi", requestId="m-1")
            await wire.close()

    assert frames[0]["status"] == 202
    assert frames[-1]["type"] == "error"
    assert frames[-1]["error"]["code"] == "TURN_FAILED"
    assert frames[-1]["requestId"] == "m-1"
    assert "wrong-key" not in frames[-1]["error"]["message"]


def test_public_bind_without_token_is_refused():
    result = subprocess.run(
        [sys.executable, "-m", "smooth_nb", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )

    assert result.returncode == 1
    assert "without a token" in result.stderr


async def test_official_client_runs_session_and_turn():
    raw_frames: list[str] = []
    with serve("--mock-reply", "Official client reply") as server:
        transport = WebSocketTransport(server.ws_url)
        transport.on_message(raw_frames.append)
        client = SmoothAgentClient(server.ws_url, transport=transport)
        await client.connect()
        try:
            created = await client.create_conversation_session(agent_id="11111111-1111-4111-8111-111111111111")
            session_id = str(created.session_id)
            latency = await client.ping()
            fetched = await client.get_session(session_id=session_id)
            turn = client.send_message(session_id=session_id, message="hello")
            streamed = [event async for event in turn]
            final = await turn.result()
            history = await client.get_messages(session_id=session_id)
        finally:
            await client.disconnect()

    assert latency >= 0
    assert fetched.session_id == created.session_id
    assert any(getattr(event, "type", None) == "stream_token" for event in streamed)
    assert final.data.data.response["responseParts"] == ["Official client reply"]
    assert [m.content.text for m in history.messages] == ["Official client reply", "hello"]
    assert len(raw_frames) >= 7, "create, ping, get, 202, tokens, final and history frames were all seen"
    for raw in raw_frames:
        assert_valid_event(json.loads(raw))

"""The notebook API on a plain asyncio loop: what it needs is a running loop, not a kernel."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from smooth_nb.engine import ModelSettings
from smooth_nb.notebook.export import ExportError
from smooth_nb.notebook.handle import NotebookServer
from smooth_nb.server import LocalServer
from tests.support.wire import WireClient


@pytest.fixture
async def srv():
    handle = await (
        LocalServer.builder().addr("127.0.0.1:0").seed_kb(True).auth("api-token").model(ModelSettings(mode="mock", mock_reply="fallback")).spawn()
    )
    yield NotebookServer(handle)
    await handle.shutdown()


async def test_sync_tool_does_not_block_server(srv):
    release = threading.Event()

    @srv.tool
    def blocking_lookup(order_id: str) -> str:
        """Wait like a slow database call."""
        release.wait(30)
        return f"order {order_id} found"

    srv.mock.tool_call("blocking_lookup", {"order_id": "7"}).reply("found it")
    chat = srv.session()
    turn_task = asyncio.create_task(chat.send("find order 7"))
    other = await WireClient.connect(f"{srv.ws_url}?token=api-token")
    for _ in range(200):
        if srv.handle.state.busy_sessions:
            break
        await asyncio.sleep(0.01)
    pong = await other.request({"action": "ping", "requestId": "during-tool"})
    release.set()
    turn = await asyncio.wait_for(turn_task, 30)
    await other.close()
    await chat.close()

    assert pong["type"] == "pong", "the server answered while the sync tool was still running"
    assert turn.tool_calls[0].result == "order 7 found"
    assert turn.text == "found it"


async def test_second_send_while_parked_keeps_frames_apart(srv):
    ran = []

    @srv.tool(confirm=True)
    def delete_order(order_id: str) -> str:
        """Delete an order."""
        ran.append(order_id)
        return "deleted"

    srv.mock.tool_call("delete_order", {"order_id": "9"}).reply("It is deleted.")
    chat = srv.session()
    parked = await chat.send("delete order 9")
    rejected = await chat.send("and something else")
    resumed = await chat.confirm(True)
    await chat.close()

    assert parked.status == "done"
    assert resumed is parked
    assert rejected.error["code"] == "TURN_IN_PROGRESS"
    assert [e.type for e in rejected.events] == ["error"], "the rejected turn holds only its own error"
    assert [c.name for c in parked.tool_calls] == ["delete_order"]
    assert parked.tool_calls[0].result == "deleted"
    assert ran == ["9"]


async def test_export_after_knowledge_change_raises(srv, tmp_path):
    chat = srv.session()
    turn = await chat.send("Can I return an order after delivery?")
    srv.kb.add("Any order can be paid with a gift card.", source="policies/gift-cards.md")

    with pytest.raises(ExportError, match="knowledge base changed"):
        turn.to_scenario(tmp_path / "stale.json")
    await chat.close()


async def test_export_skips_rejected_messages(srv, tmp_path):
    chat = srv.session()
    await chat.send("first question")
    rejected = await chat.send("")
    scenario = chat.to_scenario(tmp_path / "session.json")
    await chat.close()

    assert rejected.error["code"] == "VALIDATION_ERROR"
    sent = [step["send"].get("message") for step in scenario["steps"] if step["send"]["action"] == "send_message"]
    assert sent == ["first question"]


async def test_access_log_never_shows_token(srv, caplog):
    with caplog.at_level(logging.INFO, logger="tornado.access"):
        chat = srv.session()
        await chat.send("hello")
        await chat.close()
        with pytest.raises(Exception):
            await WireClient.connect(srv.ws_url + "?token=api-token", origin="http://attacker.example")

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "GET /ws" in logged, "the upgrade request is logged"
    assert "403 GET /ws" in logged, "the rejected origin is logged"
    assert "api-token" not in logged, "the token is not in the access log"


async def test_compare_rejects_non_turn(srv):
    import smooth_nb

    chat = srv.session()
    turn = await chat.send("hi")
    await chat.close()

    with pytest.raises(TypeError, match="two turns"):
        smooth_nb.compare(turn, "not a turn")


async def test_send_after_stop_raises_connection_error(srv):
    chat = srv.session()
    await chat.send("hi")
    srv.stop()
    await asyncio.sleep(0.05)

    with pytest.raises(ConnectionError, match="still running"):
        await chat.send("are you there?")


async def test_new_session_after_stop_raises_connection_error(srv):
    import smooth_nb

    srv.stop()
    chat = srv.session()

    with pytest.raises(ConnectionError, match="still running"):
        await chat.send("hello?")
    assert smooth_nb.ExportError is ExportError, "ExportError is importable from the package"


async def test_mock_error_fails_turn_cleanly(srv):
    srv.mock.error("the gateway is down")
    chat = srv.session()
    failed = await chat.send("hi")
    after = await chat.send("hi again")
    await chat.close()

    assert failed.error["code"] == "TURN_FAILED"
    assert failed.error["message"] == "the turn failed: the gateway is down"
    assert after.text == "fallback"

"""The embeddable local-flavor API: builder, handle and lifecycle."""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
import textwrap

import pytest
import websockets

from smooth_nb.engine import ModelSettings
from smooth_nb.server import LocalServer, ServerConfig, Tool
from tests.support.wire import WireClient, tokens

MOCK = ModelSettings(mode="mock", mock_reply="pong from the mock")


def port_accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_spawn_on_port_zero_reports_real_port():
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(MOCK).spawn()
    try:
        host, port = handle.addr
        assert host == "127.0.0.1"
        assert port != 0
        assert handle.ws_url == f"ws://127.0.0.1:{port}/ws"
        assert port_accepts(port)
    finally:
        await handle.shutdown()


async def test_shutdown_frees_port():
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(MOCK).spawn()
    port = handle.addr[1]

    await handle.shutdown()

    assert not handle.running
    assert not port_accepts(port)


async def test_dropping_handle_stops_server():
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(MOCK).spawn()
    port = handle.addr[1]

    del handle
    gc.collect()
    await asyncio.sleep(0)

    assert not port_accepts(port)


def test_loop_ending_stops_server():
    script = textwrap.dedent(
        """
        import asyncio, socket
        from smooth_nb.server import LocalServer

        async def main():
            global keep
            keep = await LocalServer.builder().addr("127.0.0.1:0").spawn()
            return keep.addr[1]

        port = asyncio.run(main())
        probe = socket.socket()
        print("accepts" if probe.connect_ex(("127.0.0.1", port)) == 0 else "refused")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "refused", "the handle is still referenced, yet the loop's end stopped it"


async def test_auth_off_by_default_has_no_token():
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(MOCK).spawn()
    try:
        assert handle.token is None
        wire = await WireClient.connect(handle.ws_url)
        reply = await wire.request({"action": "ping"})
        await wire.close()
        assert reply["type"] == "pong"
    finally:
        await handle.shutdown()


async def test_token_is_required_when_set():
    handle = await LocalServer.builder().addr("127.0.0.1:0").auth("s3cret-token").model(MOCK).spawn()
    try:
        with pytest.raises(websockets.InvalidStatus) as missing:
            await websockets.connect(handle.ws_url)
        with pytest.raises(websockets.InvalidStatus) as wrong:
            await websockets.connect(handle.ws_url + "?token=nope")
        wire = await WireClient.connect(handle.ws_url + "?token=s3cret-token")
        reply = await wire.request({"action": "ping"})
        await wire.close()
    finally:
        await handle.shutdown()

    assert missing.value.response.status_code == 401
    assert wrong.value.response.status_code == 401
    assert reply["type"] == "pong"
    assert "s3cret" not in repr(handle), "the token never shows in a repr"


async def test_bearer_header_is_accepted():
    handle = await LocalServer.builder().addr("127.0.0.1:0").auth("tok").model(MOCK).spawn()
    try:
        wire = await WireClient.connect(handle.ws_url, additional_headers={"Authorization": "Bearer tok"})
        reply = await wire.request({"action": "ping"})
        await wire.close()
    finally:
        await handle.shutdown()

    assert reply["type"] == "pong"


async def test_non_loopback_bind_needs_token():
    with pytest.raises(ValueError, match="without a token"):
        await LocalServer.builder().addr("0.0.0.0:0").model(MOCK).spawn()


async def test_config_cannot_move_bind_address():
    builder = LocalServer.builder().addr("127.0.0.1:0")
    builder.config(ServerConfig(seed_kb=True, model=MOCK))

    handle = await builder.spawn()
    try:
        assert handle.addr[0] == "127.0.0.1"
        assert len(handle.knowledge) == 2
    finally:
        await handle.shutdown()


@pytest.mark.parametrize("addr", ["nonsense", "127.0.0.1:http", "127.0.0.1:70000"])
def test_invalid_address_is_rejected(addr):
    with pytest.raises(ValueError, match="invalid"):
        LocalServer.builder().addr(addr)


async def test_busy_port_error_names_address():
    first = await LocalServer.builder().addr("127.0.0.1:0").model(MOCK).spawn()
    try:
        with pytest.raises(OSError, match=f"binding local server on 127.0.0.1:{first.addr[1]}"):
            await LocalServer.builder().addr(("127.0.0.1", first.addr[1])).model(MOCK).spawn()
    finally:
        await first.shutdown()


class SlowTool:
    """A tool that waits until released, so a test can act while a turn is inside it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.finished: list[bool] = []

    async def __call__(self, arguments):
        await self.release.wait()
        self.finished.append(True)
        return "late"


async def spawn_with_slow_tool(slow: SlowTool, *, then_text: str | None = "never sent"):
    """Start a server whose scripted model calls ``slow_lookup``, then answers ``then_text``."""
    script = [{"kind": "toolCall", "name": "slow_lookup", "arguments": "{}"}]
    if then_text is not None:
        script.append({"kind": "text", "text": then_text})
    model = ModelSettings(mode="script", script=tuple(script))
    return await LocalServer.builder().addr("127.0.0.1:0").model(model).tools([Tool("slow_lookup", "waits", slow)]).spawn()


async def turn_inside_tool(handle, message: str = "hi") -> tuple[WireClient, str]:
    """Open a session and send a turn; return once the turn is waiting inside the slow tool."""
    wire = await WireClient.connect(handle.ws_url)
    session_id = await wire.create_session()
    await wire.send({"action": "send_message", "requestId": "t-1", "sessionId": session_id, "message": message})
    await wire.recv()  # the 202 acknowledgement
    await wire.recv()  # the toolCall chunk
    return wire, session_id


async def test_shutdown_ends_running_turn_and_closes_sockets():
    slow = SlowTool()
    handle = await spawn_with_slow_tool(slow, then_text=None)
    wire, _ = await turn_inside_tool(handle)

    await handle.shutdown()
    frames = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frames.append(await wire.recv())

    assert closed.value.rcvd.code == 1001
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["error"]["code"] == "SERVER_SHUTTING_DOWN"
    assert frames[0]["requestId"] == "t-1"


async def test_tool_runs_in_turn():
    calls = []

    def lookup(arguments):
        calls.append(arguments)
        return {"status": "shipped"}

    script = (
        {"kind": "toolCall", "name": "lookup_order", "arguments": '{"id": 7}'},
        {"kind": "text", "text": "It shipped."},
    )
    model = ModelSettings(mode="script", script=script)
    tool = Tool("lookup_order", "Look up an order", lookup)
    handle = await LocalServer.builder().addr("127.0.0.1:0").model(model).tools([tool]).spawn()
    try:
        wire = await WireClient.connect(handle.ws_url)
        session_id = await wire.create_session()
        frames = await wire.turn(session_id, "where is order 7?")
        await wire.close()
    finally:
        await handle.shutdown()

    chunks = [f["data"]["state"]["rawResponse"] for f in frames if f["type"] == "stream_chunk"]
    assert calls == [{"id": 7}]
    assert chunks[0] == {"toolCall": {"name": "lookup_order", "arguments": {"id": 7}}}
    assert chunks[1]["toolResult"]["name"] == "lookup_order"
    assert chunks[1]["toolResult"]["isError"] is False
    assert tokens(frames) == "It shipped."


async def test_disconnect_mid_turn_ends_turn():
    slow = SlowTool()
    handle = await spawn_with_slow_tool(slow)
    try:
        wire, _ = await turn_inside_tool(handle)
        await wire.close()
        for _ in range(100):
            if not handle.state.busy_sessions:
                break
            await asyncio.sleep(0.02)
        slow.release.set()
        await asyncio.sleep(0.05)
        record = handle.state.turn_log.get("t-1")
        remaining = handle.state.router.scripted_pending
    finally:
        await handle.shutdown()

    assert not handle.state.busy_sessions, "the turn ended with its socket"
    assert len(record.llm_calls) == 1, "no model call happened after the disconnect"
    assert remaining == 1, "the reply after the tool was never requested"


async def test_cancel_stops_before_next_model_call():
    slow = SlowTool()
    handle = await spawn_with_slow_tool(slow)
    try:
        wire, session_id = await turn_inside_tool(handle, "keep this")
        await wire.send({"action": "cancel", "requestId": "t-1", "sessionId": session_id})
        cancelled = await wire.recv()
        slow.release.set()
        await asyncio.sleep(0.05)
        history = await wire.request({"action": "get_conversation_messages", "sessionId": session_id})
        await wire.close()
        calls = len(handle.state.turn_log.get("t-1").llm_calls)
    finally:
        await handle.shutdown()

    assert cancelled["type"] == "cancelled"
    assert cancelled["requestId"] == "t-1"
    assert slow.finished == [], "the cancelled tool call did not run to its end"
    assert calls == 1, "no model call after the cancel"
    assert [m["content"]["text"] for m in history["data"]["messages"]] == ["keep this"]

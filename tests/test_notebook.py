"""End-to-end tests of the notebook integration, each run in a real Jupyter kernel.

Every test drives an ipykernel process through jupyter_client or nbclient, so
``%load_ext smooth_nb`` and ``%smooth_local`` run exactly as they do in a
notebook and the server serves from the kernel's own event loop. Turns that
need a model go to the stand-in gateway process, whose URL and key reach the
kernel only through the environment it is started with. The test process's
own environment is never changed.

Tests that only need a running kernel share one module-scoped kernel started
without gateway variables. Each of them stops its server afterwards. Tests
that shut a kernel down, or need one in which nothing has run yet, start
their own.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
import websockets.sync.client
from jupyter_client.blocking.client import BlockingKernelClient
from nbclient import NotebookClient
from websockets.exceptions import InvalidStatus

from smooth_nb.server.knowledge import DEMO_DOCUMENTS

from tests.support.kernel import (
    CELL_TIMEOUT,
    KERNEL_NAME,
    KERNEL_START_TIMEOUT,
    SOCKET_TIMEOUT,
    evaluate,
    kernel_env,
    plain_text,
    receive_reply,
    run_cell,
    running_kernel,
    start_server,
)
from tests.support.stand_in_gateway import run_stand_in_gateway

GATEWAY_KEY = "sk-notebook-test-key-5307"

QUICKSTART = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
RETURNS_QUESTION = "How long do I have to return an order?"
RETURNS_SOURCE = "policies/returns.md"
RETURNS_PASSAGE = DEMO_DOCUMENTS[RETURNS_SOURCE]
MOCK_REPLY = "This is the fixed mock reply."

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# ---------------------------------------------------------------------------
# Port helpers
# ---------------------------------------------------------------------------


def accepts_connections(port: int) -> bool:
    """Return whether a TCP connect to 127.0.0.1:``port`` succeeds, and False when it is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT):
            return True
    except ConnectionRefusedError:
        return False


def unused_port() -> int:
    """Return a port that was free when checked. Another process could still bind it before it is used."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_kernel() -> Iterator[BlockingKernelClient]:
    with running_kernel(kernel_env()) as (_manager, client):
        yield client


@pytest.fixture
def kernel(shared_kernel: BlockingKernelClient) -> Iterator[BlockingKernelClient]:
    """The shared kernel with smooth_nb loaded and no server running, before and after the test."""
    cleanup = "%load_ext smooth_nb\n%smooth_local stop"
    run_cell(shared_kernel, cleanup)
    yield shared_kernel
    run_cell(shared_kernel, cleanup)


@pytest.fixture(scope="module")
def imported_modules() -> Iterator[dict[str, set[str]]]:
    """Record ``sys.modules`` in a fresh kernel before and after loading smooth_nb."""
    snapshot = "import sys\nsorted(sys.modules)"
    with running_kernel(kernel_env()) as (_manager, client):
        before = set(evaluate(client, snapshot))

        run_cell(client, "import smooth_nb")
        after_import = set(evaluate(client, snapshot))

        run_cell(client, "%load_ext smooth_nb")
        after_load_ext = set(evaluate(client, snapshot))

    yield {"before": before, "after import": after_import, "after load_ext": after_load_ext}


# ---------------------------------------------------------------------------
# Quickstart notebook
# ---------------------------------------------------------------------------


def test_quickstart_notebook_uses_gateway(tmp_path: Path) -> None:
    notebook = nbformat.read(QUICKSTART, as_version=4)
    log_path = tmp_path / "gateway-requests.jsonl"

    with run_stand_in_gateway(key=GATEWAY_KEY, log_path=log_path) as gateway:
        env = kernel_env(SMOOAI_GATEWAY_URL=gateway.base_url, SMOOAI_GATEWAY_KEY=GATEWAY_KEY)
        executor = NotebookClient(
            notebook,
            kernel_name=KERNEL_NAME,
            timeout=CELL_TIMEOUT,
            startup_timeout=KERNEL_START_TIMEOUT,
            resources={"metadata": {"path": str(QUICKSTART.parent)}},
        )
        # nbclient raises CellExecutionError on the first cell that fails.
        executor.execute(env=env)
        requests = gateway.requests()

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for index, cell in enumerate(code_cells):
        assert cell.execution_count is not None, f"code cell {index} did not run: {cell.source!r}"
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, f"code cell {index} has error outputs: {errors}"

    turn_cells = [cell for cell in code_cells if "chat.send(" in cell.source]
    assert len(turn_cells) == 1, f"expected one cell that sends a turn, found {len(turn_cells)}"
    turn_output = "".join(output.get("text", "") for output in turn_cells[0].outputs if output.output_type == "stream")
    # The cell after the turn shows the Turn's repr, which names the error of a failed turn.
    notebook_output = "\n".join(plain_text(output) for cell in code_cells for output in cell.outputs)
    assert "17 days" in turn_output, (
        f"the turn cell's output does not mention 17 days: {turn_output!r}\nall notebook output:\n{notebook_output}"
    )
    cited_lines = [line for line in turn_output.splitlines() if line.startswith("cited:")]
    assert cited_lines, f"the turn cell printed no 'cited:' line: {turn_output!r}"
    assert RETURNS_SOURCE in cited_lines[0], f"{RETURNS_SOURCE} is not cited: {cited_lines[0]!r}"

    chat_requests = [request for request in requests if request["path"].endswith("/chat/completions")]
    assert chat_requests, f"the gateway logged no chat request; its log: {requests}"
    for request in chat_requests:
        assert request["authorization_ok"] is True, f"the gateway rejected the key of a request: {request}"
    system_texts = [
        str(message.get("content"))
        for message in chat_requests[0]["body"]["messages"]
        if message.get("role") == "system"
    ]
    assert any(RETURNS_PASSAGE in text for text in system_texts), (
        f"no system message carried the {RETURNS_SOURCE} passage: {system_texts}"
    )


# ---------------------------------------------------------------------------
# Server lifetime
# ---------------------------------------------------------------------------


def test_kernel_shutdown_frees_port() -> None:
    with running_kernel(kernel_env()) as (manager, client):
        start_server(client)
        port = evaluate(client, "srv.addr[1]")
        assert accepts_connections(port), f"the server is not listening on port {port} after start"

        manager.shutdown_kernel(now=False)

        assert not accepts_connections(port), f"port {port} still accepts connections after the kernel shut down"


def test_kernel_restart_frees_port() -> None:
    with running_kernel(kernel_env()) as (manager, client):
        start_server(client)
        port = evaluate(client, "srv.addr[1]")
        assert accepts_connections(port), f"the server is not listening on port {port} after start"

        manager.restart_kernel(now=False)
        client.wait_for_ready(timeout=KERNEL_START_TIMEOUT)

        assert not accepts_connections(port), f"port {port} still accepts connections after the kernel restarted"


@pytest.mark.parametrize("command", ["%smooth_local stop", "%unload_ext smooth_nb"])
def test_stop_frees_port_clears_current(kernel: BlockingKernelClient, command: str) -> None:
    start_server(kernel)
    port = evaluate(kernel, "srv.addr[1]")
    assert accepts_connections(port), f"the server is not listening on port {port} after start"

    stopped = run_cell(kernel, command)

    assert not stopped.errors, f"{command} raised: {stopped.errors}"
    assert not accepts_connections(port), f"port {port} still accepts connections after {command}"
    assert evaluate(kernel, "import smooth_nb\nsmooth_nb.current() is None") is True, (
        f"smooth_nb.current() still returns a server after {command}"
    )


def test_second_start_keeps_first_server(kernel: BlockingKernelClient) -> None:
    start_server(kernel)
    ws_url = evaluate(kernel, "srv.ws_url")
    requested_port = unused_port()

    second = run_cell(kernel, f"srv2 = %smooth_local start --seed-kb --port {requested_port}")

    assert not second.errors, f"the second %smooth_local start raised: {second.errors}"
    assert "already running" in second.stdout, f"the second start did not say a server is running: {second.stdout!r}"
    assert ws_url in second.stdout, f"the second start did not name {ws_url}: {second.stdout!r}"
    assert evaluate(kernel, "srv2 is srv") is True, "the second start returned a different server"
    assert not accepts_connections(requested_port), f"the second start bound port {requested_port}"


# ---------------------------------------------------------------------------
# Status, widget and help
# ---------------------------------------------------------------------------


def test_status_shows_ws_url(kernel: BlockingKernelClient) -> None:
    start_server(kernel)
    ws_url = evaluate(kernel, "srv.ws_url")

    status = run_cell(kernel, "%smooth_local status")

    assert not status.errors, f"%smooth_local status raised: {status.errors}"
    plain_texts = [bundle.get("text/plain", "") for bundle in status.bundles("execute_result")]
    assert plain_texts, f"%smooth_local status returned no result; stdout: {status.stdout!r}"
    assert ws_url in plain_texts[0], f"%smooth_local status does not show {ws_url}: {plain_texts[0]!r}"


def test_widget_magic_displays_widget(kernel: BlockingKernelClient) -> None:
    start_server(kernel)

    displayed = run_cell(kernel, "%smooth_local widget")

    assert not displayed.errors, f"%smooth_local widget raised: {displayed.errors}"
    displays = displayed.bundles("display_data")
    assert len(displays) == 1, f"expected one display_data output, got {len(displays)}"
    assert WIDGET_MIME in displays[0], f"the display has no widget view: {sorted(displays[0])}"
    assert "text/html" in displays[0], f"the display has no text/html fallback: {sorted(displays[0])}"


def test_help_documents_subcommands(kernel: BlockingKernelClient) -> None:
    queried = run_cell(kernel, "%smooth_local?")

    help_text = queried.page_text()
    assert help_text, f"%smooth_local? sent no help page; reply: {queried.reply['content']}"
    for subcommand in ("start", "stop", "status", "widget"):
        described = re.search(rf"^{subcommand}\s+\S", help_text, flags=re.MULTILINE)
        assert described, f"the help does not describe the {subcommand} subcommand:\n{help_text}"


# ---------------------------------------------------------------------------
# Model modes
# ---------------------------------------------------------------------------


def test_keyless_start_reports_offline_mode(kernel: BlockingKernelClient) -> None:
    has_key = evaluate(kernel, "import os\n'SMOOAI_GATEWAY_KEY' in os.environ")
    assert has_key is False, "the shared kernel was started with SMOOAI_GATEWAY_KEY set"

    started = start_server(kernel)

    assert "offline mode" in started.stdout.lower(), f"the start cell did not report offline mode: {started.stdout!r}"
    assert "SMOOAI_GATEWAY_KEY" in started.stdout, f"the start cell did not name SMOOAI_GATEWAY_KEY: {started.stdout!r}"


def test_keyless_turn_answers_from_kb(kernel: BlockingKernelClient) -> None:
    start_server(kernel)

    sent = run_cell(kernel, f"turn = await srv.session().send({RETURNS_QUESTION!r})")

    assert not sent.errors, f"the turn raised: {sent.errors}"
    assert evaluate(kernel, "turn.status") == "done", f"the turn did not finish: {evaluate(kernel, 'turn.error')}"
    text = evaluate(kernel, "turn.text")
    assert "17 days" in text, f"the offline answer does not mention 17 days: {text!r}"
    cited = evaluate(kernel, "[citation['id'] for citation in turn.citations]")
    assert RETURNS_SOURCE in cited, f"the offline answer does not cite {RETURNS_SOURCE}: {cited}"


def test_mock_reply_answers_fixed_text(kernel: BlockingKernelClient) -> None:
    start_server(kernel, f"--mock-reply {MOCK_REPLY!r}")

    sent = run_cell(kernel, "turn = await srv.session().send('Hello?')")

    assert not sent.errors, f"the turn raised: {sent.errors}"
    assert evaluate(kernel, "turn.status") == "done", f"the turn did not finish: {evaluate(kernel, 'turn.error')}"
    assert evaluate(kernel, "turn.text") == MOCK_REPLY, "the turn did not answer the --mock-reply text"


# ---------------------------------------------------------------------------
# Serving while the kernel is idle
# ---------------------------------------------------------------------------


def test_idle_kernel_serves_websocket_client(kernel: BlockingKernelClient) -> None:
    start_server(kernel)
    ws_url = evaluate(kernel, "srv.ws_url")
    token = evaluate(kernel, "srv.token")
    assert token, "the server started without a token"

    # The kernel is idle from here on, so only its event loop can respond to this client.
    with websockets.sync.client.connect(f"{ws_url}?token={token}", open_timeout=SOCKET_TIMEOUT) as connection:
        request = {
            "action": "create_conversation_session",
            "requestId": "r1",
            "agentId": "0b6c3d5e-2f4a-4c1e-9a7b-8d2e6f1c3a90",
        }
        connection.send(json.dumps(request))
        reply = receive_reply(connection, "r1")

    assert reply.get("type") == "immediate_response", f"expected an immediate_response frame: {reply}"
    assert reply.get("status") == 200, f"expected status 200 for the new session: {reply}"


def test_websocket_without_token_rejected(kernel: BlockingKernelClient) -> None:
    start_server(kernel)
    ws_url = evaluate(kernel, "srv.ws_url")

    with pytest.raises(InvalidStatus) as rejected:
        with websockets.sync.client.connect(ws_url, open_timeout=SOCKET_TIMEOUT):
            pass

    status_code = rejected.value.response.status_code
    assert status_code == 401, f"expected HTTP 401 for a handshake without a token, got {status_code}"


# ---------------------------------------------------------------------------
# Import cost
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("module_name", ["smooth_operator_core", "openai"])
def test_load_ext_skips_engine_imports(imported_modules: dict[str, set[str]], module_name: str) -> None:
    if module_name in imported_modules["before"]:
        pytest.skip(f"the kernel imports {module_name} before smooth_nb loads, so this check cannot tell")

    assert module_name not in imported_modules["after import"], f"import smooth_nb imported {module_name}"
    assert module_name not in imported_modules["after load_ext"], f"%load_ext smooth_nb imported {module_name}"


# ---------------------------------------------------------------------------
# Invalid magic input
# ---------------------------------------------------------------------------


def test_start_rejects_non_integer_port(kernel: BlockingKernelClient) -> None:
    result = run_cell(kernel, "%smooth_local start --port notanumber")

    assert not result.errors, f"%smooth_local start --port notanumber raised: {result.errors}"
    assert "--port" in result.stdout, f"the message does not name --port: {result.stdout!r}"
    assert "notanumber" in result.stdout, f"the message does not show the invalid value: {result.stdout!r}"
    assert evaluate(kernel, "import smooth_nb\nsmooth_nb.current() is None") is True, "a server started anyway"


def test_unknown_subcommand_prints_usage(kernel: BlockingKernelClient) -> None:
    result = run_cell(kernel, "%smooth_local frobnicate")

    assert not result.errors, f"%smooth_local frobnicate raised: {result.errors}"
    assert "unknown command 'frobnicate'" in result.stdout, f"the message does not name the command: {result.stdout!r}"
    assert "%smooth_local start" in result.stdout, f"the message does not show the usage: {result.stdout!r}"


def test_start_rejects_out_of_range_port(kernel: BlockingKernelClient) -> None:
    result = run_cell(kernel, "%smooth_local start --port 70000")

    assert not result.errors, f"%smooth_local start --port 70000 raised: {result.errors}"
    assert "70000" in result.stdout, f"the message does not show the invalid port: {result.stdout!r}"
    assert "65535" in result.stdout, f"the message does not give the valid range: {result.stdout!r}"
    assert evaluate(kernel, "import smooth_nb\nsmooth_nb.current() is None") is True, "a server started anyway"

"""Drive a real Jupyter kernel from a test: start it, run cells, read their outputs.

The kernel runs as its own ipykernel process behind jupyter_client, so magics,
top-level ``await`` and display output behave exactly as in a notebook. A test
controls the kernel's environment completely: :func:`kernel_env` starts from
this process's environment without the gateway variables.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager, start_new_kernel

KERNEL_NAME = "python3"
KERNEL_START_TIMEOUT = 60
#: Upper bound on one cell in seconds. It is generous because one cell may run a whole turn.
CELL_TIMEOUT = 120
#: Upper bound on one WebSocket handshake or frame from the kernel's server, in seconds.
SOCKET_TIMEOUT = 15

#: Environment variables with this prefix configure the model gateway; kernels start without them.
GATEWAY_PREFIX = "SMOOAI_GATEWAY_"

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(repr=False)
class CellResult:
    """The execute reply of one cell and the IOPub messages it produced, in order."""

    reply: dict[str, Any]
    messages: list[dict[str, Any]]

    def __repr__(self) -> str:
        # Short, because pytest prints it in every failed assert that reads a property.
        return f"<CellResult {self.status}, {len(self.messages)} messages>"

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]

    @property
    def stdout(self) -> str:
        chunks = []
        for message in self.messages:
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                chunks.append(message["content"]["text"])
        return "".join(chunks)

    @property
    def errors(self) -> list[str]:
        """Return each error output as ``ename: evalue``."""
        found = []
        for message in self.messages:
            if message["msg_type"] == "error":
                found.append(f"{message['content']['ename']}: {message['content']['evalue']}")
        return found

    def bundles(self, msg_type: str) -> list[dict[str, Any]]:
        """Return the MIME bundles of the ``display_data`` or ``execute_result`` messages."""
        return [message["content"]["data"] for message in self.messages if message["msg_type"] == msg_type]

    def page_text(self) -> str:
        """Return the pager text a ``?`` query sent in the execute reply, without ANSI colors."""
        pages = [payload for payload in self.reply["content"].get("payload", []) if payload.get("source") == "page"]
        text = "".join(page["data"].get("text/plain", "") for page in pages)
        return ANSI_ESCAPE.sub("", text)


def plain_text(output: dict[str, Any]) -> str:
    """Return the stream text or ``text/plain`` of one notebook output."""
    if output.get("output_type") == "stream":
        return output.get("text", "")
    return output.get("data", {}).get("text/plain", "")


def run_cell(client: BlockingKernelClient, code: str) -> CellResult:
    messages: list[dict[str, Any]] = []
    reply = client.execute_interactive(code, timeout=CELL_TIMEOUT, output_hook=messages.append)
    return CellResult(reply, messages)


def evaluate(client: BlockingKernelClient, expression: str) -> Any:
    """Evaluate a Python expression in the kernel and return its value, rebuilt from its repr."""
    result = run_cell(client, expression)
    assert not result.errors, f"evaluating {expression!r} in the kernel failed: {result.errors}"

    values = result.bundles("execute_result")
    assert values, f"evaluating {expression!r} in the kernel gave no result; stdout: {result.stdout!r}"
    return ast.literal_eval(values[0]["text/plain"])


def kernel_env(**variables: str) -> dict[str, str]:
    """Return this process's environment without any ``SMOOAI_GATEWAY_*`` variable, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(GATEWAY_PREFIX)}
    env.update(variables)
    return env


@contextlib.contextmanager
def running_kernel(env: dict[str, str]) -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    """Start a kernel with exactly ``env`` as its environment, and shut it down on exit."""
    manager, client = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=KERNEL_START_TIMEOUT, env=env)
    try:
        yield manager, client
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=False)


def run_checked(client: BlockingKernelClient, code: str) -> CellResult:
    """Run a cell and fail the test, with the cell's errors and output, when it raises."""
    result = run_cell(client, code)
    assert not result.errors, f"the cell raised {result.errors}\ncell:\n{code}\nstdout:\n{result.stdout}"
    return result


def start_server(client: BlockingKernelClient, arguments: str = "--seed-kb") -> CellResult:
    """Load the extension, then run ``srv = %smooth_local start ARGUMENTS`` in the kernel."""
    run_cell(client, "%load_ext smooth_nb")
    result = run_cell(client, f"srv = %smooth_local start {arguments}")
    assert not result.errors, f"%smooth_local start {arguments} raised: {result.errors}"
    return result


def receive_reply(connection: Any, request_id: str) -> dict[str, Any]:
    """Read frames until the one for ``request_id`` arrives, and return it."""
    while True:
        frame = json.loads(connection.recv(timeout=SOCKET_TIMEOUT))
        if frame.get("requestId") == request_id:
            return frame

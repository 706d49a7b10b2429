"""Start ``python -m smooth_nb serve`` as a real process for tests."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from tests.support.wire import REPO

_LISTENING = re.compile(r"listening on (ws://\S+)")


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    ws_url: str
    output: list[str]

    @property
    def port(self) -> int:
        return int(self.ws_url.rsplit(":", 1)[1].split("/")[0])

    @property
    def http_url(self) -> str:
        return self.ws_url.replace("ws://", "http://").removesuffix("/ws")


def clean_env(**extra: str) -> dict[str, str]:
    """Return os.environ without any model settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMOOAI_", "SMOOTH_AGENT_"))}
    env.update(extra)
    return env


@contextlib.contextmanager
def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> Iterator[ServeProcess]:
    command = [sys.executable, "-m", "smooth_nb", "serve", "--port", "0", *args]
    process = subprocess.Popen(
        command, cwd=REPO, env=env or clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output: list[str] = []
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        ws_url = None
        while ws_url is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"smooth_nb serve did not start: {''.join(output)}")
            if selector.select(0.1):
                line = process.stdout.readline()
                output.append(line)
                match = _LISTENING.search(line)
                if match:
                    ws_url = match.group(1)
        yield ServeProcess(process, ws_url, output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

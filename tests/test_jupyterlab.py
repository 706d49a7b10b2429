"""The chat widget inside a real JupyterLab and Notebook 7, driven in headless Chromium.

Each test starts a real Jupyter server process on 127.0.0.1 (``python -m
jupyterlab`` or ``python -m notebook``) with a token, an isolated Jupyter
configuration, data and runtime directory, and no ``SMOOAI_*`` settings, so
the kernel's smooth-nb server runs offline and replies from the demo knowledge
base. The browser opens a small notebook containing the two magic lines, runs
all cells from the Run menu, types a question into the widget and clicks Send,
the way a person would.

The widget reaching ``data-state="connected"`` shows that the kernel's server
accepted the page's origin, because that server rejects WebSocket connections
from origins it does not know. A third cell also prints the origins the kernel
read from the Jupyter server's runtime file and the origins its smooth-nb
server allows, and the test checks the page origin is in both.

Every HTTP request the browser makes to a host other than 127.0.0.1 is
aborted and fails the test, so the tests also check that the page works with
no network.

Chromium and its flags are the ones ``tests/test_browser.py`` uses. Without
/usr/bin/chromium the tests are skipped, unless the CI environment variable is
set, in which case they fail.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nbformat
import pytest
from playwright.sync_api import Browser, Page, Route, expect
from playwright.sync_api import Error as PlaywrightError

from tests.support.browser import launch_chromium
from tests.support.cli import clean_env
from tests.support.wire import REPO

ARTIFACTS = REPO / "test-artifacts"
NOTEBOOK_NAME = "smooth-chat.ipynb"
RETURNS_QUESTION = "How long do I have to return an order?"

# The browser aborts requests to any URL that is not on 127.0.0.1.
OFF_LOOPBACK_URL = re.compile(r"^(?!https?://127\.0\.0\.1(:\d+)?/)")

# The third cell prints this prefix followed by a JSON object, and the test
# reads that line back from the page.
KERNEL_REPORT_PREFIX = "smooth-nb kernel report:"

# Upper bounds for the waits, in the unit each name ends with.
SERVER_START_SECONDS = 60
SERVER_STOP_SECONDS = 20
KERNEL_START_MS = 60_000
WAIT_MS = 30_000

# Flags for both applications, each checked against ``--help-all`` of
# jupyter_server 2.21, JupyterLab 4.6 and Notebook 7.6. The ``LabApp`` ones
# turn off the news feed, the update check against PyPI and the extension
# manager's PyPI search, and they also apply under ``python -m notebook``,
# which loads the JupyterLab server extension too.
JUPYTER_FLAGS = [
    "--ServerApp.ip=127.0.0.1",
    "--ServerApp.port=0",
    "--ServerApp.port_retries=0",
    "--ServerApp.open_browser=False",
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    "--LabApp.extension_manager=readonly",
]


# ---------------------------------------------------------------------------
# The Jupyter server process
# ---------------------------------------------------------------------------


@dataclass
class JupyterServer:
    """A running Jupyter server: its process, base URL, token and working folders."""

    process: subprocess.Popen[bytes]
    base_url: str
    token: str
    root_dir: Path
    log_path: Path

    @property
    def origin(self) -> str:
        parts = urlsplit(self.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def page_url(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}?token={self.token}"

    def get_json(self, path: str) -> Any:
        """Call the server's REST API with the token and decode the JSON body."""
        request = urllib.request.Request(
            f"{self.base_url.rstrip('/')}/{path.lstrip('/')}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-max_chars:]
        except OSError as exc:
            return f"(cannot read the Jupyter server log {self.log_path}: {exc})"


def write_notebook(path: Path) -> None:
    """Write a notebook that loads the extension, starts the server and prints a report from the kernel."""
    report = (
        "import json, sys\n"
        "from smooth_nb.notebook.magics import jupyter_server_origins\n"
        f"print({KERNEL_REPORT_PREFIX!r}, json.dumps({{\n"
        '    "prefix": sys.prefix,\n'
        '    "server_origins": sorted(jupyter_server_origins()),\n'
        '    "allowed_origins": sorted(srv.handle.allowed_origins),\n'
        "}))"
    )
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%load_ext smooth_nb"),
            nbformat.v4.new_code_cell("srv = %smooth_local start --seed-kb\nsrv"),
            nbformat.v4.new_code_cell(report),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        },
    )
    nbformat.write(notebook, str(path))


def jupyter_env(home: Path) -> dict[str, str]:
    """Build the server's environment: no model settings, and Jupyter state kept under ``home``.

    ``JUPYTER_PATH`` puts this venv's kernelspecs first and the temporary data
    directory hides the user's own, so the ``python3`` kernel is this venv's.
    jupyter_client also replaces the kernelspec's bare ``python`` with the
    server's own interpreter. The kernel prints ``sys.prefix`` and the test
    checks it.
    """
    env = clean_env(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "lab-workspaces"),
        IPYTHONDIR=str(home / "ipython"),
    )
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("JUPYTER_PORT", None)
    env.pop("JUPYTER_TOKEN", None)
    return env


def read_server_info(runtime_dir: Path, pid: int) -> dict | None:
    """Return the server's ``jpserver-<pid>.json`` contents, or None until it is written."""
    path = runtime_dir / f"jpserver-{pid}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wait_until_serving(process: subprocess.Popen[bytes], runtime_dir: Path, token: str, log_path: Path) -> str:
    """Wait until the server has written its runtime file and ``/api/status`` returns 200, then return its URL."""
    deadline = time.monotonic() + SERVER_START_SECONDS
    base_url = None
    last_error = "no runtime file yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
            raise RuntimeError(f"the Jupyter server exited with code {process.returncode} during startup:\n{log}")
        if base_url is None:
            info = read_server_info(runtime_dir, process.pid)
            if info is not None and isinstance(info.get("url"), str):
                base_url = info["url"]
        if base_url is not None:
            request = urllib.request.Request(base_url.rstrip("/") + "/api/status", headers={"Authorization": f"token {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    if response.status == 200:
                        return base_url
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
        time.sleep(0.2)
    log = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
    raise RuntimeError(f"the Jupyter server did not serve within {SERVER_START_SECONDS} s ({last_error}):\n{log}")


def kernel_pids(runtime_dir: Path) -> list[int]:
    """Return the ids of kernel processes whose connection file lives in ``runtime_dir``.

    Only kernels this test's server started have that folder on their
    command line, because the folder is a fresh temporary one.
    """
    marker = str(runtime_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ipykernel" in command_line and marker in command_line:
            pids.append(int(entry.name))
    return pids


def stop_server(process: subprocess.Popen[bytes], runtime_dir: Path) -> list[int]:
    """Stop the server (SIGTERM, then SIGKILL) and return the ids of kernels that outlived it.

    On SIGTERM jupyter_server shuts its kernels down before it exits. Kernels
    that are still running afterwards are killed here, by process id.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(SERVER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(SERVER_STOP_SECONDS)

    leftovers = kernel_pids(runtime_dir)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


@pytest.fixture
def start_jupyter() -> Iterator[Callable[[str], JupyterServer]]:
    """Return a function that starts ``python -m <module>``. The finalizer stops each server and removes its folders."""
    started: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    leftover_kernels: list[int] = []

    def start(module: str) -> JupyterServer:
        home = Path(tempfile.mkdtemp(prefix="smooth-nb-jupyter-"))
        root_dir = home / "notebooks"
        runtime_dir = home / "runtime"
        root_dir.mkdir()
        runtime_dir.mkdir()
        write_notebook(root_dir / NOTEBOOK_NAME)
        token = secrets.token_hex(16)
        log_path = home / "jupyter.log"

        command = [
            sys.executable,
            "-m",
            module,
            *JUPYTER_FLAGS,
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root_dir}",
        ]
        if os.geteuid() == 0:
            # Containers often run tests as root, and jupyter_server refuses that by default.
            command.append("--ServerApp.allow_root=True")
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, cwd=home, env=jupyter_env(home), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
        started.append((process, runtime_dir, home))
        base_url = wait_until_serving(process, runtime_dir, token, log_path)
        return JupyterServer(process, base_url, token, root_dir, log_path)

    try:
        yield start
    finally:
        for process, runtime_dir, home in started:
            leftover_kernels.extend(stop_server(process, runtime_dir))
            shutil.rmtree(home, ignore_errors=True)
    assert not leftover_kernels, f"kernels outlived their Jupyter server and were killed: {leftover_kernels}"


# ---------------------------------------------------------------------------
# The browser
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch_chromium()


@dataclass
class BrowserLog:
    """Console messages of the page and requests aborted because they left 127.0.0.1."""

    console: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def console_tail(self, count: int = 40) -> str:
        return "\n".join(self.console[-count:])


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(browser: Browser, browser_log: BrowserLog) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)

    def block(route: Route) -> None:
        browser_log.blocked.append(route.request.url)
        route.abort()

    # A regular expression is matched inside the Playwright driver, so requests
    # to 127.0.0.1 never wait for this Python thread. A Python predicate would
    # pause every request until the test next calls into Playwright.
    context.route(OFF_LOOPBACK_URL, block)
    new_page = context.new_page()
    new_page.on("console", lambda message: browser_log.console.append(f"[{message.type}] {message.text}"))
    new_page.on("pageerror", lambda error: browser_log.console.append(f"[pageerror] {error}"))
    new_page.on(
        "requestfailed",
        lambda request: browser_log.console.append(f"[requestfailed] {request.method} {request.url} {request.failure}"),
    )
    try:
        yield new_page
    finally:
        context.close()


# ---------------------------------------------------------------------------
# What the user does in the page
# ---------------------------------------------------------------------------


@dataclass
class ChatOutcome:
    """What the page showed after the question was answered."""

    kernel_report: dict
    typed_value: str
    cells_before_typing: int
    cells_after_typing: int
    answer: str
    citations: list[str]
    notice: str
    screenshot: Path


def wait_for_connected_kernel(page: Page, server: JupyterServer) -> None:
    """Wait until the page is connected to the notebook's kernel and the kernel is idle.

    The toolbar's execution indicator alone is not enough, because Notebook
    7.6 can show "idle" before the page has opened the kernel's WebSocket, and
    Run All in that moment runs nothing. So the server must also report a
    connection to an idle kernel for this notebook.
    """
    indicator = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first
    expect(indicator, "the notebook's kernel starts and is idle").to_be_attached(timeout=KERNEL_START_MS)

    deadline = time.monotonic() + KERNEL_START_MS / 1000
    sessions: Any = []
    while time.monotonic() < deadline:
        sessions = server.get_json("api/sessions")
        for session in sessions:
            kernel = session.get("kernel") or {}
            if (
                session.get("path", "").endswith(NOTEBOOK_NAME)
                and kernel.get("connections", 0) >= 1
                and kernel.get("execution_state") == "idle"
            ):
                return
        # Waiting through Playwright keeps the page's events flowing.
        page.wait_for_timeout(200)
    raise AssertionError(f"no idle, connected kernel for {NOTEBOOK_NAME} within {KERNEL_START_MS} ms: {sessions}")


def run_all_cells(page: Page) -> None:
    """Open the Run menu and choose Run All Cells."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator(".lm-Menu .lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()


def dismiss_news_prompt(page: Page) -> None:
    """Close the "get notified about official Jupyter news?" notification, if shown, so it does not cover the chat.

    The notification is only a prompt. With ``--LabApp.news_url=None`` the
    server fetches no news whatever the reply.
    """
    close = page.get_by_role("button", name="Hide notification")
    if close.count() > 0:
        close.first.click()
        expect(close, "the notification closes").to_have_count(0, timeout=WAIT_MS)


def read_kernel_report(page: Page) -> dict:
    output = page.locator(".jp-OutputArea-output", has_text=KERNEL_REPORT_PREFIX).first
    expect(output, "the third cell prints its report").to_be_visible(timeout=WAIT_MS)
    text = output.inner_text()
    return json.loads(text.split(KERNEL_REPORT_PREFIX, 1)[1].strip())


def chat_in_notebook(page: Page, server: JupyterServer, path: str, screenshot_name: str) -> ChatOutcome:
    """Open the notebook at ``path``, run all cells, ask the returns question in the widget and read the answer."""
    page.goto(server.page_url(path), timeout=WAIT_MS)
    wait_for_connected_kernel(page, server)

    run_all_cells(page)
    root = page.locator("[data-testid='smooth-chat']")
    expect(root, "the widget appears in the output and connects").to_have_attribute(
        "data-state", "connected", timeout=WAIT_MS
    )
    kernel_report = read_kernel_report(page)

    # Type key by key, as a person does, so JupyterLab's keyboard handling receives
    # every key. A key taken as a notebook command would be missing from the
    # input, and some (a, b, d d) would add or delete cells.
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells_before_typing = cells.count()
    chat_input = page.get_by_test_id("smooth-chat-input")
    chat_input.click()
    chat_input.press_sequentially(RETURNS_QUESTION)
    typed_value = chat_input.input_value()
    cells_after_typing = cells.count()

    page.get_by_test_id("smooth-chat-send").click()
    bubble = page.locator("[data-testid='smooth-chat-message'][data-role='assistant']").last
    expect(bubble, "the assistant's answer finishes").to_have_attribute("data-done", "true", timeout=WAIT_MS)
    answer = bubble.get_by_test_id("smooth-chat-text").inner_text()
    citations = bubble.get_by_test_id("smooth-chat-citation").evaluate_all("items => items.map(item => item.dataset.source)")
    notice = page.get_by_test_id("smooth-chat-notice")
    expect(notice, "the offline notice is shown").to_be_visible(timeout=WAIT_MS)

    dismiss_news_prompt(page)
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / screenshot_name
    root.scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot))

    return ChatOutcome(
        kernel_report=kernel_report,
        typed_value=typed_value,
        cells_before_typing=cells_before_typing,
        cells_after_typing=cells_after_typing,
        answer=answer,
        citations=citations,
        notice=notice.inner_text(),
        screenshot=screenshot,
    )


def check_outcome(outcome: ChatOutcome, server: JupyterServer, browser_log: BrowserLog) -> None:
    report = outcome.kernel_report
    assert Path(report["prefix"]).resolve() == Path(sys.prefix).resolve(), (
        f"the kernel runs this venv's Python: kernel sys.prefix {report['prefix']!r}, tests {sys.prefix!r}"
    )
    assert server.origin in report["server_origins"], (
        f"the kernel finds the Jupyter server's origin {server.origin} in its runtime file: {report['server_origins']}"
    )
    assert server.origin in report["allowed_origins"], (
        f"the kernel's server allows the page origin {server.origin}: {report['allowed_origins']}"
    )
    assert outcome.typed_value == RETURNS_QUESTION, f"every typed key reached the chat input: {outcome.typed_value!r}"
    assert outcome.cells_after_typing == outcome.cells_before_typing, (
        f"typing in the chat ran no notebook shortcut: {outcome.cells_before_typing} cells before, "
        f"{outcome.cells_after_typing} after"
    )
    assert "17 days" in outcome.answer, f"the answer quotes the returns policy: {outcome.answer!r}"
    assert "policies/returns.md" in outcome.citations, f"the answer cites policies/returns.md: {outcome.citations!r}"
    assert "Offline mode" in outcome.notice, f"the notice says the chat is offline: {outcome.notice!r}"
    assert outcome.screenshot.stat().st_size > 0, f"the screenshot was written to {outcome.screenshot}"
    assert not browser_log.blocked, f"the page requested hosts other than 127.0.0.1: {browser_log.blocked}"


def failure_context(page: Page, server: JupyterServer, browser_log: BrowserLog, screenshot_name: str) -> str:
    """Save a screenshot of the failed page and return the console and server log for the error message."""
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / screenshot_name
    try:
        page.screenshot(path=str(screenshot), timeout=WAIT_MS)
    except PlaywrightError as exc:
        screenshot = f"(no screenshot: {exc})"
    return (
        f"\n--- screenshot ---\n{screenshot}"
        f"\n--- browser console ---\n{browser_log.console_tail()}"
        f"\n--- Jupyter server log ---\n{server.log_tail()}"
    )


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_jupyterlab_widget_answers_offline(page: Page, start_jupyter, browser_log: BrowserLog):
    server = start_jupyter("jupyterlab")
    try:
        outcome = chat_in_notebook(page, server, f"lab/tree/{NOTEBOOK_NAME}", "jupyterlab-widget.png")
    except (AssertionError, PlaywrightError) as exc:
        raise AssertionError(f"{exc}{failure_context(page, server, browser_log, 'jupyterlab-failure.png')}") from exc

    check_outcome(outcome, server, browser_log)


def test_notebook7_widget_answers_offline(page: Page, start_jupyter, browser_log: BrowserLog):
    pytest.importorskip("notebook", minversion="7", reason="Notebook 7 is not installed; pip install 'notebook>=7'")
    server = start_jupyter("notebook")
    try:
        outcome = chat_in_notebook(page, server, f"notebooks/{NOTEBOOK_NAME}", "notebook7-widget.png")
    except (AssertionError, PlaywrightError) as exc:
        raise AssertionError(f"{exc}{failure_context(page, server, browser_log, 'notebook7-failure.png')}") from exc

    check_outcome(outcome, server, browser_log)

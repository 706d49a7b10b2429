"""Measure notebook start-up costs in a real kernel.

Reports, each as the median of ``--runs`` fresh kernels:

- ``import``: ``import smooth_nb`` in a fresh Python process (``python -c``);
- ``load_ext``: wall time of ``%load_ext smooth_nb`` inside the kernel;
- ``start_to_accept``: from the start of the ``%smooth_local start`` cell (kernel
  clock) until a WebSocket client outside the kernel completes its handshake
  (same machine, so the same clock);
- ``first_turn`` and ``second_turn``: send to ``eventual_response`` of a grounded
  turn against the stand-in gateway process, as seen by that outside client, with
  the time to the first token.

Run: ``python bench/startup.py --runs 5``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.stand_in_gateway import run_stand_in_gateway  # noqa: E402

QUESTION = "How long do I have to return an order?"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_code(client, code: str) -> str:
    output: list[str] = []

    def hook(message):
        content = message["content"]
        if message["msg_type"] == "stream":
            output.append(content["text"])
        elif message["msg_type"] == "error":
            output.append("\n".join(content["traceback"]))

    client.execute_interactive(code, timeout=120, output_hook=hook)
    return "".join(output)


async def connect_when_ready(url: str, deadline: float):
    import websockets

    while time.time() < deadline:
        try:
            socket_ = await websockets.connect(url)
            return time.time(), socket_
        except OSError:
            await asyncio.sleep(0.002)
    raise TimeoutError(f"no connection to {url}")


async def timed_turn(socket_) -> tuple[float, float]:
    await socket_.send(json.dumps({"action": "create_conversation_session", "requestId": "c", "agentId": "bench"}))
    session_id = json.loads(await socket_.recv())["data"]["sessionId"]
    started = time.perf_counter()
    first_token = None
    await socket_.send(json.dumps({"action": "send_message", "requestId": "m", "sessionId": session_id, "message": QUESTION}))
    while True:
        frame = json.loads(await socket_.recv())
        if frame["type"] == "stream_token" and first_token is None:
            first_token = time.perf_counter() - started
        if frame["type"] in ("eventual_response", "error"):
            if frame["type"] == "error":
                raise RuntimeError(frame)
            return time.perf_counter() - started, first_token or 0.0


def import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import smooth_nb; print(time.perf_counter() - t)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return float(result.stdout.strip())


def one_run(gateway_url: str) -> dict[str, float]:
    env = dict(os.environ, SMOOAI_GATEWAY_URL=gateway_url, SMOOAI_GATEWAY_KEY="bench-key")
    manager, client = start_new_kernel(kernel_name="python3", env=env)
    try:
        load = run_code(client, "import time as _t\n_s = _t.perf_counter()\n%load_ext smooth_nb\nprint(_t.perf_counter() - _s)")
        port = free_port()
        url = f"ws://127.0.0.1:{port}/ws"
        loop = asyncio.new_event_loop()
        waiter = loop.create_task(connect_when_ready(url, time.time() + 60))
        client.execute(f"import time as _t\n_started = _t.time()\nsrv = %smooth_local start --seed-kb --no-auth --port {port}")
        accepted, socket_ = loop.run_until_complete(waiter)
        started = float(run_code(client, "print(_started)"))
        first, first_ttft = loop.run_until_complete(timed_turn(socket_))
        second, second_ttft = loop.run_until_complete(timed_turn(socket_))
        loop.run_until_complete(socket_.close())
        loop.close()
        return {
            "import": import_seconds(),
            "load_ext": float(load.strip().splitlines()[-1]),
            "start_to_accept": accepted - started,
            "first_turn": first,
            "first_turn_ttft": first_ttft,
            "second_turn": second,
            "second_turn_ttft": second_ttft,
        }
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = []
    with run_stand_in_gateway(key="bench-key") as gateway:
        for _ in range(args.runs):
            results.append(one_run(gateway.base_url))
    print(f"{'metric':<18} {'median ms':>10} {'min ms':>8} {'max ms':>8}  ({args.runs} fresh kernels)")
    for name in results[0]:
        values = [r[name] * 1000 for r in results]
        print(f"{name:<18} {statistics.median(values):>10.1f} {min(values):>8.1f} {max(values):>8.1f}")


if __name__ == "__main__":
    main()

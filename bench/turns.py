"""Cost per turn of smooth-nb, the upstream Python server and a bare tornado floor, side by side.

Each server runs as its own process on loopback with the same mock model (the
same reply, streamed one token per word). A load generator in this process
opens N WebSocket sessions and runs streamed turns back to back on each for a
fixed time. Reported per server and N:

- turns per second, turn latency p50 and p99, time to first token p50;
- the server process's CPU milliseconds per turn, read from /proc (user +
  system time), so the load generator's own CPU stays out of it;
- the server's resident memory after the run.

Also: CPU per turn as the reply grows (``--lengths``), and memory per idle
session (``--idle-sessions``).

Run everything: ``python bench/turns.py``; a quicker pass:
``python bench/turns.py --seconds 3 --sessions 1,50 --lengths 3,100``.
Results are printed as Markdown tables and written to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
AGENT_ID = "11111111-1111-4111-8111-111111111111"


def reply_of(words: int) -> str:
    return " ".join(f"word{n}" for n in range(words)) + "."


def command_for(kind: str, reply: str, profile: Path | None = None) -> list[str]:
    if kind == "smooth-nb":
        base = ["-m", "smooth_nb", "serve", "--port", "0", "--mock-reply", reply, "--keepalive", "0"]
        if profile is not None:
            return [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile), *base]
        return [sys.executable, *base]
    if kind == "upstream":
        return [sys.executable, str(REPO / "bench" / "upstream_server.py"), "--port", "0", "--reply", reply]
    if kind == "floor":
        return [sys.executable, str(REPO / "bench" / "floor_server.py"), "--port", "0", "--reply", reply]
    raise ValueError(f"unknown server kind {kind!r}: expected smooth-nb, upstream or floor")


@dataclass
class ServerProcess:
    kind: str
    process: subprocess.Popen[str]
    ws_url: str

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" of the command name.
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.contextmanager
def running(kind: str, reply: str, profile: Path | None = None) -> Iterator[ServerProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMOOAI_", "SMOOTH_AGENT_"))}
    process = subprocess.Popen(command_for(kind, reply, profile), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        ws_url = None
        while ws_url is None:
            line = process.stdout.readline()
            if not line and (process.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError(f"{kind} server did not start")
            match = re.search(r"listening on (ws://\S+)", line)
            if match:
                ws_url = match.group(1)
        yield ServerProcess(kind, process, ws_url)
    finally:
        process.send_signal(signal.SIGINT if profile is not None else signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RunResult:
    turns: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)


#: Turns run in one conversation before the client starts a new one, so no run
#: meets a server's cap on messages per conversation (smooth-nb's is 2000).
TURNS_PER_CONVERSATION = 200


class Session:
    def __init__(self, socket: websockets.ClientConnection, session_id: str) -> None:
        self.socket = socket
        self.session_id = session_id
        self.turns = 0

    @classmethod
    async def open(cls, url: str) -> Session:
        socket = await websockets.connect(url, max_size=None, compression=None)
        return cls(socket, await cls._create(socket))

    @staticmethod
    async def _create(socket: websockets.ClientConnection) -> str:
        await socket.send(json.dumps({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT_ID}))
        while True:
            frame = json.loads(await socket.recv())
            if frame.get("type") == "immediate_response":
                return frame["data"]["sessionId"]

    async def turn(self, result: RunResult) -> None:
        self.turns += 1
        if self.turns % TURNS_PER_CONVERSATION == 0:
            self.session_id = await self._create(self.socket)
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        first = None
        await self.socket.send(json.dumps({"action": "send_message", "requestId": request_id, "sessionId": self.session_id, "message": "benchmark turn"}))
        while True:
            frame = json.loads(await self.socket.recv())
            kind = frame.get("type")
            if kind == "stream_token" and first is None:
                first = time.perf_counter() - started
            elif kind == "eventual_response":
                result.turns += 1
                result.latencies.append(time.perf_counter() - started)
                result.ttfts.append(first if first is not None else result.latencies[-1])
                return
            elif kind == "error":
                result.errors += 1
                return


async def load(url: str, sessions: int, seconds: float) -> RunResult:
    opened = await asyncio.gather(*(Session.open(url) for _ in range(sessions)))
    for session in opened:
        await session.turn(RunResult())  # warm each session once; not counted
    result = RunResult()
    deadline = time.perf_counter() + seconds

    async def worker(session: Session) -> None:
        while time.perf_counter() < deadline:
            await session.turn(result)

    await asyncio.gather(*(worker(s) for s in opened))
    await asyncio.gather(*(s.socket.close() for s in opened))
    return result


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def measure(server: ServerProcess, sessions: int, seconds: float) -> dict[str, float]:
    cpu_before = server.cpu_seconds()
    wall = time.perf_counter()
    result = asyncio.run(load(server.ws_url, sessions, seconds))
    wall = time.perf_counter() - wall
    cpu = server.cpu_seconds() - cpu_before
    turns = max(result.turns, 1)
    return {
        "sessions": sessions,
        "turns": result.turns,
        "errors": result.errors,
        "turns_per_second": result.turns / seconds,
        "p50_ms": percentile(result.latencies, 0.50) * 1000,
        "p99_ms": percentile(result.latencies, 0.99) * 1000,
        "ttft_p50_ms": percentile(result.ttfts, 0.50) * 1000,
        # The session set-up and warm-up turns are inside this window too; both are small next to the run.
        "cpu_ms_per_turn": cpu * 1000 / turns,
        "rss_mib": server.rss_bytes() / 2**20,
        "wall_s": wall,
    }


async def create_idle(url: str, count: int) -> None:
    async with websockets.connect(url, max_size=None) as socket:
        for start in range(0, count, 500):
            batch = min(500, count - start)
            for n in range(batch):
                await socket.send(json.dumps({"action": "create_conversation_session", "requestId": f"c{n}", "agentId": AGENT_ID}))
            for _ in range(batch):
                await socket.recv()


def idle_session_bytes(server: ServerProcess, count: int) -> float:
    # One turn first, so the engine import a server may do lazily is not counted as session memory.
    asyncio.run(load(server.ws_url, 1, 0.5))
    asyncio.run(create_idle(server.ws_url, 100))
    before = server.rss_bytes()
    asyncio.run(create_idle(server.ws_url, count))
    return (server.rss_bytes() - before) / count


def markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join(" --- " for _ in columns) + "|"
    body = ["| " + " | ".join(format(row[key], spec) if spec else str(row[key]) for key, _, spec in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="smooth-nb,upstream,floor")
    parser.add_argument("--sessions", default="1,10,50,200", help="concurrent session counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per measurement")
    parser.add_argument("--words", type=int, default=12, help="streamed tokens per turn in the concurrency runs")
    parser.add_argument("--lengths", default="3,10,50,200,500", help="streamed tokens per turn for the reply-length sweep")
    parser.add_argument("--length-sessions", type=int, default=10)
    parser.add_argument("--idle-sessions", type=int, default=10_000)
    parser.add_argument("--profile", type=Path, help="also profile smooth-nb with pyinstrument at 50 sessions, into this file")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    args = parser.parse_args()
    kinds = args.servers.split(",")
    report: dict[str, list[dict]] = {"concurrency": [], "lengths": [], "idle": []}

    for sessions in [int(n) for n in args.sessions.split(",")]:
        for kind in kinds:
            with running(kind, reply_of(args.words)) as server:
                row = {"server": kind, **measure(server, sessions, args.seconds)}
            report["concurrency"].append(row)
            print(f"{kind:>9} sessions={sessions:<4} {row['turns_per_second']:8.1f} turns/s  cpu {row['cpu_ms_per_turn']:6.3f} ms/turn  p99 {row['p99_ms']:7.1f} ms", flush=True)

    for words in [int(n) for n in args.lengths.split(",")]:
        for kind in kinds:
            with running(kind, reply_of(words)) as server:
                row = {"server": kind, "tokens": words + 0, **measure(server, args.length_sessions, max(2.0, args.seconds / 2))}
            report["lengths"].append(row)
            print(f"{kind:>9} tokens={words:<4} cpu {row['cpu_ms_per_turn']:7.3f} ms/turn", flush=True)

    if args.idle_sessions:
        for kind in kinds:
            with running(kind, reply_of(args.words)) as server:
                per_session = idle_session_bytes(server, args.idle_sessions)
            report["idle"].append({"server": kind, "sessions": args.idle_sessions, "bytes_per_session": per_session})
            print(f"{kind:>9} idle session {per_session:8.0f} bytes", flush=True)

    if args.profile is not None:
        with running("smooth-nb", reply_of(args.words), profile=args.profile) as server:
            measure(server, 50, args.seconds)
        print(f"profile written to {args.profile}")

    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(markdown(report["concurrency"], [
        ("server", "server", ""), ("sessions", "sessions", ""), ("turns_per_second", "turns/s", ".1f"),
        ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"), ("ttft_p50_ms", "TTFT p50 ms", ".1f"),
        ("cpu_ms_per_turn", "server CPU ms/turn", ".3f"), ("rss_mib", "RSS MiB", ".1f"), ("errors", "errors", ""),
    ]))
    print()
    print(markdown(report["lengths"], [("server", "server", ""), ("tokens", "tokens/turn", ""), ("cpu_ms_per_turn", "server CPU ms/turn", ".3f")]))
    if report["idle"]:
        print()
        print(markdown(report["idle"], [("server", "server", ""), ("sessions", "idle sessions", ""), ("bytes_per_session", "bytes/session", ".0f")]))


if __name__ == "__main__":
    main()

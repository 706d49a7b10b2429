"""The conformance corpus, and our own scenarios in the same format, through ``serve --scenario``.

Each scenario boots a fresh ``python -m smooth_nb serve --scenario FILE`` process
and is replayed by an independent WebSocket client that validates every frame
against the protocol's JSON Schemas.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import serve
from tests.support.scenarios import ScenarioFailure, corpus_scenarios, run_scenario
from tests.support.wire import WireClient

OWN_SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.json"))


def test_corpus_is_present():
    assert len(corpus_scenarios()) >= 12, "the shared conformance corpus was not found"


@pytest.mark.parametrize("path", corpus_scenarios() + OWN_SCENARIOS, ids=lambda p: p.stem)
async def test_scenario_replays_green(path):
    scenario = json.loads(path.read_text(encoding="utf-8"))

    with serve("--scenario", str(path), "--keepalive", "0") as server:
        await run_scenario(scenario, server.ws_url)


async def test_runner_reports_wrong_reply():
    path = next(p for p in corpus_scenarios() if p.stem == "basic-streaming-turn")
    scenario = json.loads(path.read_text(encoding="utf-8"))
    scenario["steps"][1]["expect"][1]["assertAccumulated"] = "a different reply"

    with serve("--scenario", str(path), "--keepalive", "0") as server:
        with pytest.raises(ScenarioFailure, match="accumulated token"):
            await run_scenario(scenario, server.ws_url)


async def test_keepalive_reaches_idle_connection():
    path = next(p for p in corpus_scenarios() if p.stem == "basic-streaming-turn")

    with serve("--scenario", str(path), "--keepalive", "0.2") as server:
        client = await WireClient.connect(server.ws_url)
        frame = await client.recv(timeout=5, skip_keepalive=False)
        await client.close()

    assert frame["type"] == "keepalive"
    assert isinstance(frame["data"]["requestId"], str)

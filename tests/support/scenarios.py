"""Replay a conformance scenario against a running server, the way the corpus defines it.

For each step the runner sends one frame (with ``{{name}}`` placeholders filled
from earlier captures) and matches the events that follow, in order. Matchers
compare only the fields they name; ``keepalive`` and ``pong`` frames are skipped
unless a matcher asks for them; an empty ``expect`` list means nothing may arrive.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.wire import WireClient, spec_dir

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_SKIPPED = {"keepalive", "pong"}


def corpus_scenarios() -> list[Path]:
    return sorted((spec_dir() / "conformance" / "scenarios").glob("*.json"))


def lookup(value: Any, path: str) -> Any:
    """Follow a dot path; numeric segments index lists. Raise KeyError when a segment is missing."""
    for segment in path.split("."):
        if isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        elif isinstance(value, dict) and segment in value:
            value = value[segment]
        else:
            raise KeyError(path)
    return value


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return float(actual) == float(expected)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(same(actual[k], expected[k]) for k in expected)
    return actual == expected


def fill(value: Any, captures: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return captures[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(captures[m.group(1)]), value)
    if isinstance(value, list):
        return [fill(item, captures) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, captures) for key, item in value.items()}
    return value


class ScenarioFailure(AssertionError):
    pass


class _Events:
    """Received events with one-event pushback, skipping keepalive and pong unless wanted."""

    def __init__(self, client: WireClient) -> None:
        self.client = client
        self.pending: list[dict[str, Any]] = []

    async def next(self, wanted_type: str, timeout: float) -> dict[str, Any]:
        while True:
            event = self.pending.pop(0) if self.pending else await self.client.recv(timeout, skip_keepalive=False)
            if event.get("type") in _SKIPPED and wanted_type not in _SKIPPED:
                continue
            return event

    def push_back(self, event: dict[str, Any]) -> None:
        self.pending.insert(0, event)


def _check(matcher: dict[str, Any], event: dict[str, Any], where: str, captures: dict[str, Any]) -> None:
    if event.get("type") != matcher["type"]:
        raise ScenarioFailure(f"{where}: expected a {matcher['type']} event, got {json.dumps(event)[:800]}")
    if "status" in matcher and not same(event.get("status"), matcher["status"]):
        raise ScenarioFailure(f"{where}: status {event.get('status')} != {matcher['status']}")
    if "statusGte" in matcher and not (isinstance(event.get("status"), int) and event["status"] >= matcher["statusGte"]):
        raise ScenarioFailure(f"{where}: status {event.get('status')} < {matcher['statusGte']}")
    for path, expected in (matcher.get("assert") or {}).items():
        try:
            actual = lookup(event, path)
        except KeyError:
            raise ScenarioFailure(f"{where}: {path} is missing in {json.dumps(event)[:800]}") from None
        if not same(actual, fill(expected, captures)):
            raise ScenarioFailure(f"{where}: {path} is {actual!r}, expected {expected!r}")
    for name, path in (matcher.get("capture") or {}).items():
        try:
            captures[name] = lookup(event, path)
        except KeyError:
            raise ScenarioFailure(f"{where}: cannot capture {name} from {path}") from None


async def run_scenario(scenario: dict[str, Any], ws_url: str, *, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Run every step; raise ScenarioFailure at the first mismatch. Return all received frames."""
    client = await WireClient.connect(ws_url)
    events = _Events(client)
    captures: dict[str, Any] = {}
    try:
        for step_index, step in enumerate(scenario["steps"]):
            await client.send(fill(step["send"], captures))
            expect = step.get("expect", [])
            if not expect:
                await client.expect_silence(0.5)
                continue
            for matcher_index, matcher in enumerate(expect):
                where = f"step {step_index} matcher {matcher_index} ({matcher['type']})"
                event = await events.next(matcher["type"], timeout)
                _check(matcher, event, where, captures)
                if not matcher.get("repeat"):
                    continue
                field = matcher.get("accumulate")
                total = str(event.get(field, "")) if field else ""
                while True:
                    following = await events.next(matcher["type"], timeout)
                    if following.get("type") != matcher["type"]:
                        events.push_back(following)
                        break
                    _check(matcher, following, where, captures)
                    if field:
                        total += str(following.get(field, ""))
                if "assertAccumulated" in matcher and total != matcher["assertAccumulated"]:
                    raise ScenarioFailure(f"{where}: accumulated {field} is {total!r}, expected {matcher['assertAccumulated']!r}")
        return client.received
    finally:
        await client.close()

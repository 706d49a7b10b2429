"""Boot a local server from a conformance scenario file.

A scenario (the format of the protocol's conformance corpus) names what the
model answers (``mockLlmScript``), the tools to register (``server.tools``, each
returning its fixed ``result``), the tools that need write confirmation
(``server.confirmTools``) and the documents of the knowledge base
(``server.knowledge``). ``python -m smooth_nb serve --scenario FILE`` and
``%smooth_local start --scenario FILE`` both use :func:`configure_builder`, so a
front-end developer gets the same deterministic turns the tests replay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smooth_nb.engine import ModelSettings
from smooth_nb.server.local import LocalServerBuilder
from smooth_nb.server.tools import Tool


class ScenarioError(ValueError):
    """The scenario file cannot be used; the message names the file and the problem."""


def load_scenario(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        scenario = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ScenarioError(f"scenario {path} is not valid JSON: {exc}") from None
    if not isinstance(scenario, dict):
        raise ScenarioError(f"scenario {path} must be a JSON object")
    if not {"mockLlmScript", "server", "steps"} & scenario.keys():
        raise ScenarioError(f"{path} is not a scenario: it has none of mockLlmScript, server and steps")
    _check(scenario, path)
    return scenario


def _check(scenario: dict[str, Any], path: Path) -> None:
    script = scenario.get("mockLlmScript", [])
    if not isinstance(script, list):
        raise ScenarioError(f"{path}: 'mockLlmScript' must be an array")
    for index, entry in enumerate(script):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind == "text" and isinstance(entry.get("text"), str):
            continue
        if kind == "toolCall" and isinstance(entry.get("name"), str) and isinstance(entry.get("arguments", "{}"), (str, dict)):
            continue
        raise ScenarioError(
            f"{path}: mockLlmScript[{index}] must be {{kind: 'text', text}} or {{kind: 'toolCall', name, arguments}}"
        )
    server = scenario.get("server", {})
    if not isinstance(server, dict):
        raise ScenarioError(f"{path}: 'server' must be an object")
    tools = server.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools):
        raise ScenarioError(f"{path}: 'server.tools' must be an array of objects with a 'name'")
    confirm = server.get("confirmTools", [])
    if not isinstance(confirm, list) or not all(isinstance(name, str) for name in confirm):
        raise ScenarioError(f"{path}: 'server.confirmTools' must be an array of tool names")
    unknown = set(confirm) - {t["name"] for t in tools}
    if unknown:
        raise ScenarioError(f"{path}: server.confirmTools names tools that server.tools does not define: {sorted(unknown)}")
    knowledge = server.get("knowledge", [])
    if not isinstance(knowledge, list) or not all(
        isinstance(d, dict) and isinstance(d.get("source"), str) and isinstance(d.get("content"), str) for d in knowledge
    ):
        raise ScenarioError(f"{path}: 'server.knowledge' must be an array of {{source, content}} strings")


def _fixed_result(result: Any) -> Any:
    def handler(arguments: dict[str, Any]) -> Any:
        return result

    return handler


def scenario_tools(scenario: dict[str, Any]) -> list[Tool]:
    server = scenario.get("server", {})
    confirm = set(server.get("confirmTools", []))
    tools = []
    for spec in server.get("tools", []):
        parameters = spec.get("parameters") or {"type": "object", "properties": {}}
        tools.append(
            Tool(
                name=spec["name"],
                description=str(spec.get("description", "")),
                handler=_fixed_result(spec.get("result", "")),
                parameters=parameters,
                confirm=spec["name"] in confirm,
            )
        )
    return tools


def configure_builder(builder: LocalServerBuilder, scenario: dict[str, Any]) -> LocalServerBuilder:
    """Apply a scenario's script, tools and knowledge to ``builder``."""
    script = tuple(scenario.get("mockLlmScript", []))
    documents = tuple((d["source"], d["content"]) for d in scenario.get("server", {}).get("knowledge", []))
    builder.model(ModelSettings(mode="script", script=script))
    builder.tools(scenario_tools(scenario))
    builder.config(documents=documents)
    return builder

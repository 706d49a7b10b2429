"""Tools, knowledge and scripted replies defined from notebook cells.

- :func:`tool_from_function` turns a Python function into a server tool, with a
  JSON Schema built from its signature, type hints and docstring.
- :class:`KnowledgeView` is ``srv.kb``: add text or files, search, clear.
- :class:`MockQueue` is ``srv.mock``: queue deterministic model replies.
"""

from __future__ import annotations

import glob
import html
import inspect
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smooth_nb.server.tools import Tool

_SIMPLE_TYPES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    dict: {"type": "object"},
    list: {"type": "array"},
    type(None): {"type": "null"},
}


def json_schema_for(annotation: Any) -> dict[str, Any]:
    """Return the JSON Schema of a type hint; unknown types give an unconstrained schema."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return {}
    if annotation in _SIMPLE_TYPES:
        return dict(_SIMPLE_TYPES[annotation])
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(arguments)}
    if origin in (typing.Union, types.UnionType):
        options = [json_schema_for(a) for a in arguments if a is not type(None)]
        if len(options) == 1:
            return options[0]
        return {"anyOf": options}
    if origin in (list, tuple, set, frozenset) or origin is typing.Sequence:
        schema: dict[str, Any] = {"type": "array"}
        if arguments and arguments[0] is not Ellipsis:
            schema["items"] = json_schema_for(arguments[0])
        return schema
    if origin is dict:
        schema = {"type": "object"}
        if len(arguments) == 2:
            schema["additionalProperties"] = json_schema_for(arguments[1])
        return schema
    return {}


_SECTION = re.compile(r"(Args|Arguments|Parameters|Returns|Raises|Yields|Examples?|Notes?):")
_ARG_ENTRY = re.compile(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)")
_REST_PARAM = re.compile(r":param\s+(?:\w+\s+)?(\w+):\s*(.*)")


def _docstring_parts(doc: str) -> tuple[str, dict[str, str]]:
    """Split a docstring into its description and per-parameter descriptions.

    Parameter descriptions are read from a Google-style ``Args:`` section
    (``name: text`` or ``name (type): text``, continued on indented lines) or
    from reST ``:param name: text`` lines.
    """
    description: list[str] = []
    params: dict[str, str] = {}
    section = "description"
    current: str | None = None
    entry_indent = 0
    for line in inspect.cleandoc(doc or "").splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        rest = _REST_PARAM.match(stripped)
        if rest:
            params[rest.group(1)] = rest.group(2)
            section = "other"
            continue
        if _SECTION.fullmatch(stripped):
            section = "args" if stripped[:-1] in ("Args", "Arguments", "Parameters") else "other"
            current = None
            continue
        if section == "description":
            if stripped.startswith(":"):
                section = "other"
            else:
                description.append(stripped)
            continue
        if section != "args" or not stripped:
            continue
        entry = _ARG_ENTRY.match(stripped)
        if entry and (current is None or indent <= entry_indent):
            current, entry_indent = entry.group(1), indent
            params[current] = entry.group(2)
        elif current is not None:
            params[current] += " " + stripped
    return " ".join(" ".join(description).split()), params


def tool_from_function(function: Callable[..., Any], *, name: str | None = None, confirm: bool = False) -> Tool:
    """Build a :class:`Tool` from a plain or async function.

    Each parameter becomes a property of the tool's JSON Schema (its type from
    the hint, its description from the docstring); parameters without a
    default are required. The model's arguments are passed as keyword
    arguments, so a missing or unknown one fails the call with a clear error.
    """
    if not callable(function):
        raise TypeError(f"@srv.tool needs a function, got {type(function).__name__}")
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # hints that do not resolve (a name defined later) leave the schema open
        hints = {}
    description, param_docs = _docstring_parts(function.__doc__ or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for parameter in signature.parameters.values():
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"tool {function.__name__}: positional-only parameter {parameter.name!r} cannot take a named argument")
        schema = json_schema_for(hints.get(parameter.name, parameter.annotation))
        if parameter.name in param_docs:
            schema["description"] = param_docs[parameter.name]
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
        elif parameter.default is None or isinstance(parameter.default, (str, int, float, bool)):
            schema["default"] = parameter.default
        properties[parameter.name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required

    handler: Callable[[dict[str, Any]], Any]
    if inspect.iscoroutinefunction(function):

        async def handler(arguments: dict[str, Any]) -> Any:
            return await function(**arguments)

    else:

        def handler(arguments: dict[str, Any]) -> Any:
            return function(**arguments)

    tool_name = name or function.__name__
    return Tool(
        name=tool_name,
        description=description or f"Call the Python function {tool_name}.",
        handler=handler,
        parameters=parameters,
        confirm=confirm,
    )


class KnowledgeView:
    """The server's knowledge base, from a notebook: ``srv.kb``."""

    def __init__(self, knowledge: Any) -> None:
        self._knowledge = knowledge

    def __len__(self) -> int:
        return len(self._knowledge)

    def __repr__(self) -> str:
        return f"<knowledge base: {len(self)} documents in {len(self._knowledge.document_sets())} document sets>"

    def add(self, text: str, source: str) -> None:
        """Add one document; a document with the same ``source`` is replaced."""
        if not isinstance(text, str) or not isinstance(source, str) or not source:
            raise TypeError("kb.add(text, source=...) needs str text and a non-empty str source")
        self._knowledge.add_many([(source, text)], label=f"kb.add {source}")

    def add_files(self, pattern: str, *, root: str | Path | None = None, encoding: str = "utf-8", progress: bool | None = None) -> int:
        """Add every file matching the glob ``pattern`` (``**`` recurses); return how many.

        The source of each document is its path relative to ``root`` (default:
        the current directory). A progress bar shows for more than 20 files.
        """
        base = Path(root) if root is not None else Path.cwd()
        paths = sorted(Path(p) for p in glob.glob(str(base / pattern) if not Path(pattern).is_absolute() else pattern, recursive=True))
        files = [p for p in paths if p.is_file()]
        if not files:
            raise FileNotFoundError(f"no file matches {pattern!r} under {base}; check the pattern and the current directory")
        show = progress if progress is not None else len(files) > 20
        iterator: Any = files
        if show:
            from tqdm.auto import tqdm

            iterator = tqdm(files, desc="indexing", unit="file")
        documents = []
        for path in iterator:
            try:
                text = path.read_text(encoding=encoding)
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path} is not {encoding} text ({exc.reason}); pass encoding= or exclude it") from None
            try:
                source = str(path.resolve().relative_to(base.resolve()))
            except ValueError:
                source = str(path)
            documents.append((source, text))
        self._knowledge.add_many(documents, label=f"kb.add_files {pattern}")
        return len(documents)

    def search(self, query: str, top_k: int = 5) -> SearchResults:
        """Rank documents for ``query`` as a turn would; hits carry their BM25 score."""
        return SearchResults(query, self._knowledge.search(query, top_k))

    def clear(self) -> None:
        self._knowledge.clear()

    def sources(self) -> list[str]:
        return self._knowledge.sources()


class SearchResults(list):
    """Ranked knowledge hits with a readable display."""

    def __init__(self, query: str, hits: list[Any]) -> None:
        super().__init__(hits)
        self.query = query

    def __repr__(self) -> str:
        if not self:
            return f"no document shares a term with {self.query!r}"
        return "\n".join(f"{hit.score:8.3f}  {hit.source}  {hit.content[:80]!r}" for hit in self)

    def _repr_html_(self) -> str:
        if not self:
            return f"<div>no document shares a term with <code>{html.escape(self.query)}</code></div>"
        rows = "".join(
            f"<tr><td style='text-align:right;padding-right:8px'>{hit.score:.3f}</td><td><code>{html.escape(hit.source)}</code></td>"
            f"<td>{html.escape(hit.content[:200])}</td></tr>"
            for hit in self
        )
        return f"<table style='font-size:12px'><tr><th>score</th><th>source</th><th>passage</th></tr>{rows}</table>"


class MockQueue:
    """Scripted model replies: ``srv.mock``. While replies are queued, turns run on them."""

    def __init__(self, router: Any) -> None:
        self._router = router

    def reply(self, text: str) -> MockQueue:
        """Queue a text reply for the next model call."""
        if not isinstance(text, str):
            raise TypeError(f"mock.reply needs a str, got {type(text).__name__}")
        self._router.push_text(text)
        return self

    def tool_call(self, name: str, arguments: dict[str, Any] | str | None = None) -> MockQueue:
        """Queue a reply that calls tool ``name`` with ``arguments`` (a dict or a JSON string).

        The model is called again after the tool runs, so queue the reply that
        follows too (``.tool_call(...).reply(...)``); a turn that empties the
        queue in the middle ends with an empty answer.
        """
        self._router.push_tool_call(name, arguments if arguments is not None else {})
        return self

    def error(self, message: str = "the model call failed") -> MockQueue:
        """Queue a model call that fails with ``message``: the turn ends with a TURN_FAILED error."""
        self._router.push_error(message)
        return self

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        return self._router.scripted_pending

    def clear(self) -> None:
        """Drop every queued reply, for example the rest of a cancelled turn's script."""
        self._router.clear_script()

    def __repr__(self) -> str:
        return f"<mock model: {self.pending} scripted replies queued>"

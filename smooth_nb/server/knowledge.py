"""An in-memory knowledge base with lexical ranking, and the demo documents.

:class:`KnowledgeBase` satisfies the engine's retriever interface
(``query(text, top_k)`` returning hits with ``content``, ``source`` and
``score``), so the engine grounds the model's prompt on exactly the passages the
server later reports as citations.

Ranking is BM25 over lowercase words with English stop words removed and a light
plural/verb-suffix fold ("returns" matches "return"). When no document shares a
word with the query, the first documents are returned with score 0, so the model
still has context to answer from or to decline honestly; the reference servers
ground the same way.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")

_STOP_WORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in is it its me my of on or our "
    "so than that the their them then there these they this to up was we were what when where which who "
    "why will with you your".split()
)

# BM25 parameters: the usual defaults from the literature (Robertson and Zaragoza, 2009).
_K1 = 1.2
_B = 0.75


def _fold(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def terms(text: str) -> list[str]:
    """Split ``text`` into the folded, stop-word-free terms used for ranking."""
    return [_fold(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]


@dataclass(frozen=True)
class KnowledgeHit:
    """One ranked passage: the document's text, its source and its BM25 score."""

    content: str
    source: str
    score: float


@dataclass
class _Document:
    source: str
    content: str
    term_counts: Counter[str]
    length: int


class KnowledgeBase:
    """Documents keyed by source; adding a source again replaces its text."""

    def __init__(self) -> None:
        self._documents: dict[str, _Document] = {}
        self._runs: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._documents)

    def add(self, content: str, source: str) -> None:
        if not isinstance(content, str) or not isinstance(source, str):
            raise TypeError("knowledge documents need a str content and a str source")
        counts = Counter(terms(content))
        self._documents[source] = _Document(source, content, counts, sum(counts.values()))

    def add_many(self, documents: list[tuple[str, str]], *, label: str) -> None:
        """Add ``(source, content)`` pairs and record them as one indexing run."""
        started = _now()
        clock = time.perf_counter()
        for source, content in documents:
            self.add(content, source)
        self.record_run(label, [source for source, _ in documents], started, time.perf_counter() - clock)

    def record_run(self, label: str, sources: list[str], started: str, seconds: float) -> None:
        self._runs.append(
            {
                "id": f"run-{len(self._runs) + 1}",
                "label": label,
                "status": "completed",
                "documents": len(sources),
                "documentSets": sorted({document_set(source) for source in sources}),
                "startedAt": started,
                "durationMs": round(seconds * 1000, 3),
            }
        )
        # Runs are a log for humans; keep the newest hundred.
        del self._runs[:-100]

    def runs(self) -> list[dict[str, Any]]:
        return list(self._runs)

    def document_sets(self) -> list[dict[str, Any]]:
        sets: dict[str, list[str]] = {}
        for source in self._documents:
            sets.setdefault(document_set(source), []).append(source)
        return [{"id": name, "documents": len(sources), "sources": sources} for name, sources in sets.items()]

    def clear(self) -> None:
        self._documents.clear()

    def sources(self) -> list[str]:
        return list(self._documents)

    def documents(self) -> list[tuple[str, str]]:
        """Return every document as ``(source, content)``, in insertion order."""
        return [(doc.source, doc.content) for doc in self._documents.values()]

    def search(self, query: str, top_k: int = 4) -> list[KnowledgeHit]:
        """Return up to ``top_k`` documents that share a term with ``query``, best first."""
        query_terms = set(terms(query))
        documents = list(self._documents.values())
        if not query_terms or not documents:
            return []
        average_length = sum(doc.length for doc in documents) / len(documents) or 1.0
        scored: list[tuple[float, int, _Document]] = []
        for position, doc in enumerate(documents):
            score = 0.0
            for term in query_terms:
                frequency = doc.term_counts.get(term, 0)
                if not frequency:
                    continue
                containing = sum(1 for other in documents if term in other.term_counts)
                idf = math.log(1 + (len(documents) - containing + 0.5) / (containing + 0.5))
                norm = frequency + _K1 * (1 - _B + _B * doc.length / average_length)
                score += idf * frequency * (_K1 + 1) / norm
            if score > 0:
                scored.append((score, position, doc))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [KnowledgeHit(doc.content, doc.source, round(score, 4)) for score, _, doc in scored[:top_k]]

    def query(self, query: str, top_k: int = 4) -> list[KnowledgeHit]:
        """Return the passages to ground a turn on: :meth:`search`, or the first documents."""
        hits = self.search(query, top_k)
        if hits:
            return hits
        return [KnowledgeHit(doc.content, doc.source, 0.0) for doc in list(self._documents.values())[:top_k]]


#: The demo knowledge base loaded by ``--seed-kb``: one ``policies`` document set.
DEMO_DOCUMENTS = {
    "policies/returns.md": (
        "Return policy: an order can be returned for a full refund for exactly 17 days after delivery. "
        "From day 18 on, returns are no longer accepted."
    ),
    "policies/shipping.md": (
        "Shipping policy: standard shipping arrives in 5 to 7 business days. "
        "Expedited shipping arrives in 2 business days."
    ),
}


def seed_demo(knowledge: KnowledgeBase) -> None:
    knowledge.add_many(list(DEMO_DOCUMENTS.items()), label="demo knowledge base")


def document_set(source: str) -> str:
    """Return the document set of a source: its first path segment, or ``default``."""
    head, sep, _ = source.partition("/")
    return head if sep and head else "default"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")

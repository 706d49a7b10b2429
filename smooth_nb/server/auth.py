"""The auth verifier seam: which clients may use a server.

A verifier turns the token a client presents (``/ws?token=``, or
``Authorization: Bearer`` on HTTP) into a principal, or rejects it. Two
verifiers ship: :class:`NoAuth` (every client is the anonymous principal) and
:class:`LocalTokenVerifier` (one shared secret, compared in constant time).
A verifier never reveals its secret: not in ``repr``, not in logs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Principal:
    """The identity a verified request acts as."""

    id: str
    auth: str


class Verifier(Protocol):
    #: A label safe to show: "none" or "local-token".
    mode: str

    def verify(self, token: str | None) -> Principal | None:
        """Return the principal for ``token``, or None to reject the request."""
        ...


class NoAuth:
    mode = "none"

    def verify(self, token: str | None) -> Principal | None:
        return Principal("anonymous", self.mode)

    def __repr__(self) -> str:
        return "NoAuth()"


class LocalTokenVerifier:
    """Accept exactly one shared secret."""

    mode = "local-token"

    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token:
            raise ValueError("the local token must be a non-empty string")
        self._secret = token.encode()

    def verify(self, token: str | None) -> Principal | None:
        if token is None:
            return None
        # compare_digest takes the same time wherever the first difference is.
        if hmac.compare_digest(self._secret, token.encode()):
            return Principal("local-token-holder", self.mode)
        return None

    def __repr__(self) -> str:
        return "LocalTokenVerifier(token=***)"

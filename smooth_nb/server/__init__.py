"""The smooth-operator server of smooth-nb: protocol, sessions and turns.

This package runs without IPython: the notebook integration imports it, never
the other way round.
"""

from smooth_nb.server.local import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    LocalServer,
    LocalServerBuilder,
    LocalServerHandle,
    ServerConfig,
    serve_local,
)
from smooth_nb.server.tools import Tool

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "LocalServer",
    "LocalServerBuilder",
    "LocalServerHandle",
    "ServerConfig",
    "Tool",
    "serve_local",
]

"""How a package's routes are mounted under the prefix it owns (`/admin`, `/portal`, `/api/v1`).

Each package lists its routes relative to its prefix (`admin.routing.routes`: `/customers`, ...);
the application mounts them with `Prefix`. The bare prefix (`/admin`) is a route of its own, kept
beside the mount: a Mount only answers below its path.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope


class Prefix(Mount):
    """A nameless `Mount` (route names stay the package's own, `admin:customers`) that leaves
    `prefix/` alone, so the application's slash redirect still sends `/admin/` to the `/admin` page,
    as it did when every route was listed with its absolute path."""

    def __init__(self, path: str, routes: Sequence[BaseRoute]) -> None:
        super().__init__(path, routes=routes)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] in ("http", "websocket") and _route_path(scope) == self.path + "/":
            return Match.NONE, {}
        return super().matches(scope)


def _route_path(scope: Scope) -> str:
    """The path below the application's root path (as Starlette's routers read it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root) or (len(path) > len(root) and path[len(root)] != "/"):
        return path
    return path[len(root):]

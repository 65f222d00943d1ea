"""Give the app the path the client asked for, however Vercel's rewrite delivered the request.

vercel.json rewrites ``/api/(.*)`` and ``/admin`` to the one function ``/api/index`` and adds the
original path as a query parameter: ``/api/index?__path=/api/$1``. A rewrite only picks the
function: the request keeps the path the client asked for, with the destination's query merged
in (that is what the Vercel CLI's dev server sends, Vercel's Python runtime puts the invocation's
path into the ASGI scope unchanged, and Vercel's own one-function examples rely on it), so the
app normally sees ``/api/health?__path=...``. Should the function ever see its own path
(``/api/index``) instead, this middleware puts the original path back from ``__path``. Either
way the parameter is removed, so no route sees it.

The parameter is only honoured on the function's own path, where the original path is otherwise
lost; on any other path it is dropped and the path is left alone. Restoring a path grants
nothing a client could not ask for directly: every route still runs its own auth.
"""

from __future__ import annotations

import urllib.parse

from starlette.types import ASGIApp, Receive, Scope, Send

#: Query parameter the vercel.json rewrites add to carry the original request path.
PATH_PARAM = "__path"
#: The paths under which the function itself can be addressed.
FUNCTION_PATHS = frozenset({"/api/index", "/api/index.py"})
MAX_PATH_LENGTH = 2048

_PARAM_BYTES = PATH_PARAM.encode("ascii")
# Characters RFC 3986 allows unescaped in a path.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def split_path_param(query_string: bytes) -> tuple[bytes, list[str | None]]:
    """Remove every ``__path`` item from a raw query string.

    Returns the query string without them (the other items kept byte for byte, in order) and
    the decoded values that were removed (None for a value that is not valid percent-encoded
    UTF-8).
    """
    kept: list[bytes] = []
    values: list[str | None] = []
    for item in query_string.split(b"&"):
        if not item:
            continue
        raw_key, _, raw_value = item.partition(b"=")
        if urllib.parse.unquote_to_bytes(raw_key.replace(b"+", b" ")) != _PARAM_BYTES:
            kept.append(item)
            continue
        try:
            # Not unquote_plus: a "+" in a path is a literal plus, not a space.
            values.append(urllib.parse.unquote(raw_value.decode("ascii"), errors="strict"))
        except UnicodeDecodeError:
            values.append(None)
    return b"&".join(kept), values


def is_acceptable_path(path: str) -> bool:
    """An absolute path, not scheme-relative, of sane length, without control characters."""
    return (
        path.startswith("/")
        and not path.startswith("//")
        and len(path) <= MAX_PATH_LENGTH
        and not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path)
    )


def restore_original_path(scope: Scope) -> Scope:
    """``scope`` without ``__path``; on the function's own path, with the original path back.

    Returns ``scope`` itself when the query has no ``__path``, a modified copy otherwise.
    """
    query_string, values = split_path_param(scope.get("query_string", b""))
    if not values:
        return scope
    new_scope = dict(scope)
    new_scope["query_string"] = query_string
    original = values[0]
    if (
        scope.get("path") in FUNCTION_PATHS
        and original is not None
        and all(value == original for value in values)
        and is_acceptable_path(original)
    ):
        new_scope["path"] = original
        new_scope["raw_path"] = urllib.parse.quote(original, safe=_PATH_SAFE).encode("ascii")
    return new_scope


class VercelPathMiddleware:
    """Pure ASGI middleware; a pass-through for requests without ``__path``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("query_string"):
            scope = restore_original_path(scope)
        await self.app(scope, receive, send)

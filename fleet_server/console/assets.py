"""The console's files, read once from this package and served with ETags (no token needed: they
hold no data); ``/`` and ``/console/`` lead to ``/console``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["CONSOLE_PATH", "STATIC_DIR", "Asset", "console_assets", "public_paths"]

CONSOLE_PATH = "/console"
STATIC_DIR = Path(__file__).with_name("static")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_HEADERS = {
    # the page is the console's only script source: no inline script, nothing from elsewhere
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated with the ETag: a new server version shows at once
}


@dataclass(frozen=True)
class Asset:
    """One file: where it is served, its bytes, type and ETag."""

    path: str
    body: bytes
    media_type: str
    etag: str


def _assets() -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for file in sorted(STATIC_DIR.rglob("*")):
        if not file.is_file() or file.suffix not in _TYPES:
            continue
        body = file.read_bytes()
        relative = file.relative_to(STATIC_DIR).as_posix()
        path = CONSOLE_PATH if relative == "index.html" else f"{CONSOLE_PATH}/static/{relative}"
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        found[path] = Asset(path, body, _TYPES[file.suffix], etag)
    return found


_ASSETS = _assets()


def public_paths() -> frozenset[str]:
    """Every path the console serves without a token: its files and the redirects to it."""
    return frozenset({*_ASSETS, "/", f"{CONSOLE_PATH}/"})


def _serve(request: Request) -> Response:
    asset = _ASSETS[request.url.path]
    headers = {**_HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def _to_console(_request: Request) -> Response:
    return RedirectResponse(CONSOLE_PATH, status_code=307)


def console_assets() -> list[BaseRoute]:
    """Starlette routes for the console's files and redirects (not API routes: no role, no
    OpenAPI entry)."""
    routes: list[BaseRoute] = [
        Route(path, _serve, methods=["GET", "HEAD"]) for path in sorted(_ASSETS)
    ]
    routes.append(Route("/", _to_console, methods=["GET", "HEAD"]))
    routes.append(Route(f"{CONSOLE_PATH}/", _to_console, methods=["GET", "HEAD"]))
    return routes

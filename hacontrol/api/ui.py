"""The web UI, served by every replica under `/ui/` from files shipped in the package.

The files (`hacontrol/ui/static/`) hold no data and need no token: the UI asks for one
(kept in the tab's sessionStorage) and reads the same API as the CLI. Only the files that
ship with the package are served, read once at start-up, so no request can name a path
outside them. The policy below lets only those files run: no inline script or style, no
other origin, no framing.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

from hacontrol.model.errors import not_found

from .openapi import Operation, documented

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           # A new release must not be mixed with files cached from the last one.
           "Cache-Control": "no-cache"}
TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript",
         ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png",
         ".LICENSE": "text/plain"}
ENTRY = "index.html"


def _walk(folder: Traversable, prefix: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for item in folder.iterdir():
        name = prefix + item.name
        if item.is_dir():
            out.update(_walk(item, name + "/"))
        elif any(name.endswith(ext) for ext in TYPES):
            out[name] = item.read_bytes()
    return out


def load_files() -> dict[str, tuple[bytes, str, str]]:
    """The UI's files by path under `/ui/`: (content, content type, ETag)."""
    files = _walk(resources.files("hacontrol.ui") / "static")
    return {name: (body, next(t for ext, t in TYPES.items() if name.endswith(ext)),
                   '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
            for name, body in files.items()}


FILES = load_files()


def _serve(request: web.Request, name: str) -> web.Response:
    found = FILES.get(name)
    if found is None:
        raise not_found(f"UI file {name!r}", "path")
    body, ctype, etag = found
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={**HEADERS, "ETag": etag})
    charset = None if ctype.startswith("image/png") else "utf-8"
    return web.Response(body=body, content_type=ctype, charset=charset,
                        headers={**HEADERS, "ETag": etag})


@documented(Operation("The web UI's entry page (HTML; it asks for a token itself)", "ui",
                      media="text/html", public=True, errors=()))
async def index(request: web.Request) -> web.Response:
    return _serve(request, ENTRY)


@documented(Operation("A file of the web UI (script, style, image)", "ui",
                      media="text/javascript", public=True, errors=(404,),
                      path={"path": {"type": "string"}},
                      other_media={t: {"type": "string"} for t in sorted(set(TYPES.values()))
                                   if t != "text/javascript"}))
async def static_file(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["path"])


@documented(Operation("Redirects to the web UI at /ui/", "ui", media="text/html",
                      public=True, errors=()))
async def to_ui(_: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/", headers=HEADERS)


def register(app: web.Application) -> None:
    app.router.add_get("/", to_ui)
    app.router.add_get("/ui", to_ui)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/{path:.+}", static_file)

"""The web page: the built UI (``starchart/web/dist``) served at ``/``.

Only three kinds of path are served: ``/`` (the page), ``/assets/*`` (its
content-hashed scripts and styles) and the ``/favicon*`` files; everything
else, ``/v1`` included, stays with the API and its JSON 404s. The page routes
with the URL hash (``/#/clip``), so no catch-all route is needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

# Model output is rendered as sanitised HTML; this header is the last line of
# defence: even if markup slipped through, nothing inline or remote could run
# or load. Vue's templates are compiled at build time, so no 'unsafe-eval'.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>starchart</title>
<p>The web page has not been built in this checkout: run <code>make web</code>.
The API is up at <a href="/v1/models">/v1</a>.</p>"""


def dist_dir() -> Path:
    return Path(str(resources.files("starchart"))) / "web" / "dist"


class _HashedAssets(StaticFiles):
    """Asset names carry a content hash, so browsers may keep them forever."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_web(app: FastAPI, dist: Path | None = None) -> None:
    root = dist or dist_dir()
    index = root / "index.html"

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        if not index.is_file():
            return HTMLResponse(NOT_BUILT, status_code=503, headers=_PAGE_HEADERS)
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)

    for icon in sorted(root.glob("favicon*")):
        app.add_api_route(f"/{icon.name}", _file(icon), methods=["GET"],
                          include_in_schema=False)
    if (root / "assets").is_dir():
        app.mount("/assets", _HashedAssets(directory=root / "assets"), name="assets")


def _file(path: Path) -> Callable[[], Awaitable[FileResponse]]:
    async def serve() -> FileResponse:
        return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})

    return serve

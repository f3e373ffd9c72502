"""The built page is served at / beside the API, which keeps its JSON errors."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from starchart.api.app import create_app
from starchart.api.web import dist_dir
from starchart.settings import Settings


def get(settings: Settings, engine, path: str) -> httpx.Response:
    # TestClient runs the app on its own thread's loop: safe beside the browser tests'
    # Playwright, whose loop occupies the main thread.
    app = create_app(settings, engines=[engine])
    return TestClient(app, base_url="http://127.0.0.1").get(path)


def test_page_is_served_at_root_with_a_strict_csp(settings: Settings, engine) -> None:
    page = get(settings, engine, "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert "connect-src 'self'" in csp and "object-src 'none'" in csp
    assert page.headers["cache-control"] == "no-cache"
    # Works offline: nothing in the page comes from another origin.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)

    assets = re.findall(r"""(?:src|href)="(/assets/[^"]+)\"""", page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        response = get(settings, engine, asset)
        assert response.status_code == 200
        assert "immutable" in response.headers["cache-control"]
    icon = get(settings, engine, "/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")


@pytest.mark.parametrize("path", ["/v1/nope", "/nope", "/assets/missing.js", "/index.html/x"])
def test_unknown_paths_stay_json_404s(settings: Settings, engine, path: str) -> None:
    response = get(settings, engine, path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_the_committed_build_is_in_the_package() -> None:
    assert (dist_dir() / "index.html").is_file()
    assert list((dist_dir() / "assets").glob("*.js"))

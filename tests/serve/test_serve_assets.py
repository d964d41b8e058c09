"""The icon and the API docs: served from this package and fastapi-offline's, never from a CDN."""

from __future__ import annotations

import io
import re

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageChops
from serve_helpers import make_app

from crayonbox.serve.favicon import ICO_SIZES, favicon_image, favicon_svg
from crayonbox.serve.page import STATIC


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(make_app(pipe)) as c:
        yield c


def test_favicon_is_served_and_the_committed_files_match_their_drawing(client):
    svg = client.get("/favicon.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text == favicon_svg() == (STATIC / "favicon.svg").read_text(encoding="utf-8")
    ico = client.get("/favicon.ico")
    assert ico.status_code == 200 and ico.headers["content-type"] == "image/vnd.microsoft.icon"
    assert ico.content == (STATIC / "favicon.ico").read_bytes() and len(ico.content) < 8192
    icon = Image.open(io.BytesIO(ico.content))
    assert icon.format == "ICO" and icon.info["sizes"] == {(s, s) for s in ICO_SIZES}
    for side in ICO_SIZES:  # each frame is the drawing at that size (a stale file after SHAPES changed fails)
        icon.size = (side, side)
        frame = icon.convert("RGBA")
        assert frame.size == (side, side)
        assert max(ImageChops.difference(frame, favicon_image(side)).getextrema(), key=lambda e: e[1])[1] <= 2
    page = client.get("/").text
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page
    assert '<link rel="icon" href="/favicon.ico"' in page


def test_docs_use_local_swagger_ui_and_no_cdn(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text) + re.findall(r"url: '([^']+)'", docs.text)
    assert sorted(sources) == ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css",
                               "/favicon.svg", "/openapi.json"]
    assert '"validatorUrl": null' in docs.text
    assert "cdn" not in docs.text.lower()
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 500_000  # the whole Swagger UI, not a stub
    assert client.get("/docs-assets/swagger-ui.css").status_code == 200
    assert client.get("/redoc").status_code == 404  # FastAPI's CDN page is off, not shadowed
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/generate", "/v1/generate/stream", "/v1/images/generations", "/healthz"} <= set(paths)


def test_the_page_says_what_the_model_draws_escaped():
    from crayonbox import default_model_dir
    from crayonbox.info import summary
    from crayonbox.serve.page import render_page

    about = summary(default_model_dir())
    assert "32×32 px" in about and "123 concepts" in about and "person 22" in about
    html = render_page('<script>alert(1)</script> & "x"')
    assert '<p class="about" id="about">&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;</p>' in html
    assert "<script>alert(1)" not in html

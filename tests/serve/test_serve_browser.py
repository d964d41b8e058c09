"""The page in real headless Chromium: type a prompt, press Enter, the 3×3 grid fills in, downloads work (native
and enlarged); on a 400 px screen nothing overflows; a refusal keeps the previous grid; /docs renders offline.

Uses Debian's /usr/bin/chromium driven by the `playwright` package (its bundled driver only; browsers are
never downloaded). Skips with the reason when either is missing.
"""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from serve_helpers import Gate, live_server, make_app, wait_until

from crayonbox.model.images import make_grid

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Per image: natural size and the spread of its pixel values (0 would be a blank image).
IMAGE_STATS_JS = """() => [...document.querySelectorAll('#grid img')].map((img) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  if (!img.naturalWidth) return {width: 0, spread: 0};
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let lo = 255, hi = 0;
  for (let i = 0; i < data.length; i += 4) for (let c = 0; c < 3; c++) {
    lo = Math.min(lo, data[i + c]); hi = Math.max(hi, data[i + c]);
  }
  return {width: img.naturalWidth, spread: hi - lo};
})"""


@pytest.fixture
def browser_page():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install Debian's chromium (apt-get install chromium, as "
                    "install.sh does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1000, "height": 1200}, accept_downloads=True)
        finally:
            browser.close()


@pytest.mark.browser
def test_page_fills_the_grid_and_downloads(pipe, browser_page, tmp_path):
    page = browser_page
    app = make_app(pipe)
    prompt = "a red dog on a yellow background"
    # record every image the grid shows: progressive JPEG frames first, then the final PNGs
    page.add_init_script("""window.shown = [];
      new MutationObserver((changes) => changes.forEach((c) => window.shown.push(c.target.src.slice(0, 15))))
        .observe(document, {subtree: true, attributes: true, attributeFilter: ['src']});""")
    with live_server(app) as url:
        page.goto(url)
        page.click("#settings summary")
        page.fill("#seed", "7")
        # hold the worker behind another client's request, so the page has to show its place in the queue
        gate = Gate(app.state.scheduler)
        other = threading.Thread(target=httpx.post, args=(f"{url}/v1/generate",),
                                 kwargs={"json": {"prompt": "a cat", "n": 9}, "timeout": 60,
                                         "headers": {"X-API-Key": "other"}})
        other.start()
        wait_until(lambda: app.state.scheduler.queue_requests == 1, what="the other request to queue")
        page.fill("#prompt", prompt)
        page.press("#prompt", "Enter")
        page.wait_for_function("document.getElementById('status').textContent.includes('1 request(s) ahead')",
                               timeout=15_000)
        gate.open()
        page.wait_for_selector("#grid figure.done >> nth=8", timeout=30_000)
        other.join(timeout=30)

        shown = page.evaluate("window.shown")
        assert shown.count("data:image/png;") == 9
        assert "data:image/jpeg" in shown and shown.index("data:image/jpeg") < shown.index("data:image/png;")
        stats = page.evaluate(IMAGE_STATS_JS)
        side = pipe.vqgan_config.resolution
        assert len(stats) == 9
        assert all(s["width"] == side and s["spread"] > 0 for s in stats), stats
        assert page.locator("#grid figcaption").first.text_content().startswith("seed 7")
        assert "seeds 7–15" in page.locator("#seed-info").text_content()

        offline = pipe(prompt, num_images=9, seed=7)
        caption = page.locator("#grid figcaption").nth(1)
        with page.expect_download() as first:
            caption.get_by_text(f"{side} px", exact=True).click()
        saved = tmp_path / first.value.suggested_filename
        first.value.save_as(saved)
        assert saved.name == "a-red-dog-on-a-yellow-background-8.png"
        assert Image.open(saved).convert("RGB").tobytes() == offline.images[1].tobytes()
        with page.expect_download() as enlarged:
            caption.get_by_text(f"{8 * side} px", exact=True).click()
        saved_big = tmp_path / enlarged.value.suggested_filename
        enlarged.value.save_as(saved_big)
        assert saved_big.name == "a-red-dog-on-a-yellow-background-8-x8.png"
        big = Image.open(saved_big).convert("RGB")
        assert big.size == (8 * side, 8 * side)  # every pixel an 8×8 block, not a smoothed blur
        assert big.tobytes() == offline.images[1].resize(big.size, Image.Resampling.NEAREST).tobytes()

        with page.expect_download() as grid:
            page.click("#download-grid")
        saved_grid = tmp_path / grid.value.suggested_filename
        grid.value.save_as(saved_grid)
        composed = Image.open(saved_grid).convert("RGB")
        assert composed.size == (3 * side, 3 * side)
        assert composed.tobytes() == make_grid(offline.images).tobytes()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


@pytest.mark.browser
def test_page_shows_refusals_as_text(pipe, browser_page):
    page = browser_page
    with live_server(make_app(pipe)) as url:
        page.goto(url)
        page.fill("#prompt", "a dog\u0007 barking")  # a control character: the 422 must reach the user
        page.press("#prompt", "Enter")
        page.wait_for_function("document.getElementById('status').className === 'error'", timeout=15_000)
        assert "control character U+0007" in page.locator("#status").text_content()
        assert page.locator("#grid img").count() == 0


# Whether the prompt's placeholder fits its box: its width in the input's font against the room inside.
PLACEHOLDER_FITS_JS = """() => {
  const input = document.getElementById('prompt');
  const style = getComputedStyle(input);
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = style.font;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return {text: ctx.measureText(input.placeholder).width, room};
}"""


@pytest.mark.browser
def test_narrow_screen_and_a_refusal_that_keeps_the_grid(pipe, browser_page):
    page = browser_page
    page.set_viewport_size({"width": 400, "height": 900})
    with live_server(make_app(pipe)) as url:
        page.goto(url)
        fit = page.evaluate(PLACEHOLDER_FITS_JS)
        assert 0 < fit["text"] <= fit["room"], fit
        page.fill("#prompt", "a blue cat")
        page.press("#prompt", "Enter")
        page.wait_for_selector("#grid figure.done >> nth=8", timeout=30_000)
        page.wait_for_selector("#grid figcaption a >> nth=17")  # both download links of every image
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        timing = page.locator("#timing")
        assert timing.text_content().endswith(" s")
        assert page.evaluate("document.getElementById('timing').getClientRects().length") == 1  # one line
        first_images = page.evaluate("[...document.querySelectorAll('#grid img')].map((img) => img.src)")
        assert len(first_images) == 9 and all(src.startswith("data:image/png;base64,") for src in first_images)

        page.fill("#prompt", "a dog\u0007 barking")  # refused with 422 before any stream starts
        page.press("#prompt", "Enter")
        page.wait_for_function("document.getElementById('status').className === 'error'", timeout=15_000)
        assert "control character U+0007" in page.locator("#status").text_content()
        after = page.evaluate("[...document.querySelectorAll('#grid img')].map((img) => img.src)")
        assert after == first_images  # the previous grid, untouched
        assert page.locator("#grid figure.done").count() == 9 and page.locator("#actions").is_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 400


@pytest.mark.browser
def test_docs_render_with_the_network_blocked(pipe, browser_page):
    page = browser_page
    blocked = []

    def loopback_only(route) -> None:
        if urlsplit(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", loopback_only)
    with live_server(make_app(pipe)) as url:
        page.goto(f"{url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").all_text_contents()
    assert {"/v1/generate", "/v1/generate/stream", "/v1/images/generations", "/healthz"} <= set(paths)
    assert blocked == []  # nothing even tried to leave the machine

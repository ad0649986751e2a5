"""The built site, as a reader sees it: served on loopback and opened in headless Chromium.

Screenshots of every chapter are saved under `artifacts/screenshots/` (CI keeps them).
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHAPTERS = ["video", "interpretation", "adversarial", "imagenet", "transformers", "fpn"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _pages() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [entry["file"] for entry in part["chapters"]]
    return pages


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture(scope="module")
def site_url(built_site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                  "--no-first-run", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


class Visit:
    """Open one page; record console errors and every request that would leave the machine."""

    def __init__(self, browser, url: str) -> None:
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.route("**/*", self._route)
        self.page.goto(url, wait_until="networkidle")

    def _route(self, route) -> None:  # noqa: ANN001
        url = route.request.url
        host = urlparse(url).hostname
        if url.startswith(("data:", "blob:", "about:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, site_url):
    opened: list[Visit] = []

    def _open(path: str) -> Visit:
        v = Visit(browser, f"{site_url}/{path}")
        opened.append(v)
        return v

    yield _open
    for v in opened:
        v.close()


@pytest.mark.parametrize("page", _pages())
def test_page_loads_without_errors_or_outside_requests(visit, page: str):
    v = visit(f"{page}.html")
    assert v.page.title(), f"{page}: no title"
    assert not v.errors, f"{page}: console errors {v.errors}"
    assert not v.outside, f"{page}: requests leaving the machine {v.outside}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_figures_are_visible_and_screenshot(visit, chapter: str):
    v = visit(f"book/{chapter}.html")
    images = v.page.locator("div.cell_output img")
    plots = v.page.locator("div.cell_output .js-plotly-plot")
    assert images.count() + plots.count() > 0, f"{chapter}: no figure in the outputs"
    for k in range(images.count()):
        img = images.nth(k)
        img.scroll_into_view_if_needed()
        width = img.evaluate("el => el.naturalWidth")
        assert width > 0, f"{chapter}: image {k} did not load"
        alt = (img.get_attribute("alt") or "").strip()
        assert alt and not alt.endswith(".png"), f"{chapter}: image {k} has no alt text"
    SHOTS.mkdir(parents=True, exist_ok=True)
    v.page.screenshot(path=str(SHOTS / f"{chapter}.png"), full_page=False)


def test_every_image_on_the_site_has_alt_text(built_site: Path):
    missing = []
    for page in built_site.rglob("*.html"):
        for tag in re.findall(r"<img\b[^>]*>", page.read_text(errors="ignore")):
            alt = re.search(r'\balt="([^"]*)"', tag)
            text = alt.group(1).strip() if alt else ""
            if not text or re.search(r"\.(png|jpe?g|svg|gif)$", text):  # a file name is no description
                missing.append(f"{page.relative_to(built_site)}: {tag[:120]}")
    assert not missing, "images without alt text:\n" + "\n".join(missing[:20])


def test_plotly_figures_are_interactive_offline(visit):
    v = visit("book/interpretation.html")
    points = v.page.locator(".js-plotly-plot .scatterlayer .points path")
    assert points.count() > 0, "the interpretation chapter has no plotly scatter drawn"
    point = points.first
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    assert box is not None, "no scatter point drawn"
    v.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    v.page.wait_for_selector(".hoverlayer .hovertext", timeout=5000)
    scripts = [s for s in v.page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)") if "plotly" in s]
    assert scripts and all(urlparse(s).hostname == "127.0.0.1" for s in scripts), scripts
    assert not v.outside and not v.errors


def test_search_finds_a_chapter_by_a_word_in_its_text(visit):
    v = visit("search.html?q=optical")
    v.page.wait_for_selector("#search-results li", timeout=15000)
    links = v.page.eval_on_selector_all("#search-results li a", "els => els.map(e => e.href)")
    assert any("book/video.html" in href for href in links), links


def test_launch_buttons_point_to_hub_binder_and_colab(visit):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    hub = config["launch_buttons"]["jupyterhub_url"].rstrip("/")
    v = visit("book/video.html")
    hrefs = v.page.eval_on_selector_all("a", "els => els.map(e => e.href)")
    launch = {
        "hub": [h for h in hrefs if h.startswith(hub) and "git-pull" in h],
        "Binder": [h for h in hrefs if h.startswith(config["launch_buttons"]["binderhub_url"])],
        "Colab": [h for h in hrefs if h.startswith(config["launch_buttons"]["colab_url"])],
    }
    for name, links in launch.items():
        assert links, f"no {name} link"
        # every button opens the chapter's notebook copy (Colab cannot open the .md source)
        assert all(unquote(h).endswith("book/video.ipynb") or "book/video.ipynb&" in unquote(h) for h in links), links
    assert (ROOT / "book" / "video.ipynb").is_file()
    repo = config["repository"]["url"].removeprefix("https://github.com/")
    assert launch["Colab"] == [f"{config['launch_buttons']['colab_url']}/github/{repo}/blob/main/book/video.ipynb"]

"""End to end on a real JupyterHub on loopback, driven in a real browser.

A student logs in, sees the released assignment in JupyterLab's Assignments tab, fetches it,
fills in a solution, validates and submits it; the instructor collects, autogrades, exports the
grades and generates feedback with the `cvcourse` command. The hub runs the course configuration
of deploy/jupyterhub_config.py (tests/hub/jupyterhub_config.py overrides only the test's needs).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from cvcourse import cli

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PROXY = ROOT / ".tools" / "node_modules" / ".bin" / "configurable-http-proxy"
SHOTS = ROOT / "artifacts" / "screenshots"
A = "conv3d_shapes"
STUDENT = "student1"

pytestmark = [pytest.mark.hub, pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except Exception:  # noqa: BLE001 (not up yet)
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def course_hub(tmp_path_factory):
    if not PROXY.exists():
        pytest.fail(f"{PROXY} is missing: run `make system-deps`")
    tmp = tmp_path_factory.mktemp("hub")
    exchange = tmp / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o1777)
    # The instructor's course folder, released to the exchange with the cvcourse command.
    course = tmp / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course / "nbgrader_config.py")
    with (course / "nbgrader_config.py").open("a") as handle:
        handle.write(f"\nc.Exchange.root = {str(exchange)!r}\n")
    shutil.copytree(ROOT / "solutions" / A, course / "solutions" / A)
    assert cli.main(["--course-dir", str(course), "release", A]) == 0

    port = _free_port()
    password = secrets.token_hex(8)
    env = dict(os.environ, CVCOURSE_HUB_TMP=str(tmp), CVCOURSE_HUB_PASSWORD=password,
               CVCOURSE_EXCHANGE=str(exchange), CVCOURSE_HUB_PORT=str(port),
               CVCOURSE_HUB_API_PORT=str(_free_port()), CVCOURSE_PROXY_API_PORT=str(_free_port()))
    log = (tmp / "hub.log").open("w")
    hub = subprocess.Popen([str(Path(sys.executable).with_name("jupyterhub")), "-f",
                            str(ROOT / "tests" / "hub" / "jupyterhub_config.py")],
                           cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/hub/login", timeout=90)
        yield {"url": f"http://127.0.0.1:{port}", "password": password, "course": course,
               "exchange": exchange, "tmp": tmp}
    finally:
        hub.terminate()
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hub.kill()
        subprocess.run(["pkill", "-f", f"CVCOURSE_HUB_TMP={tmp}"], check=False)
        log.close()
        print((tmp / "hub.log").read_text()[-5000:])


@pytest.fixture(scope="module")
def page(course_hub):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


def _solution_sources() -> dict[str, str]:
    nb = nbformat.read(ROOT / "solutions" / A / f"{A}.ipynb", as_version=4)
    return {cell.metadata["nbgrader"]["grade_id"]: cell.source for cell in nb.cells
            if cell.metadata.get("nbgrader", {}).get("solution")}


def test_student_fetches_fills_validates_and_submits(course_hub, page):
    url = course_hub["url"]
    page.goto(f"{url}/hub/login")
    page.fill("input[name=username]", STUDENT)
    page.fill("input[name=password]", course_hub["password"])
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{STUDENT}/lab**", timeout=120_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)

    # JupyterLab's Nbgrader menu -> Assignment List: the released assignment is there.
    page.get_by_text("Nbgrader", exact=True).click()
    page.get_by_text("Assignment List", exact=True).click()
    row = page.locator("#released_assignments_list .list_item:not(.nested_list_item)", has_text=A)
    row.wait_for()
    row.get_by_role("button", name="Fetch").click()
    fetched = page.locator("#fetched_assignments_list .list_item:not(.nested_list_item)", has_text=A)
    fetched.wait_for()

    # Fill in the solution through the server's contents API, with the student's own session.
    home = Path(course_hub["tmp"]) / "home" / STUDENT
    notebook = home / A / f"{A}.ipynb"
    assert notebook.exists(), f"fetch did not create {notebook}"
    api = f"{url}/user/{STUDENT}/api/contents/{A}/{A}.ipynb"
    xsrf = next(c["value"] for c in page.context.cookies() if c["name"] == "_xsrf")
    model = page.request.get(api, headers={"X-XSRFToken": xsrf}).json()
    answers = _solution_sources()
    for cell in model["content"]["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    saved = page.request.put(api, data=json.dumps({"type": "notebook", "format": "json", "content": model["content"]}),
                             headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"})
    assert saved.ok, saved.text()

    # Validate from the assignment list (expand the fetched assignment to see its notebooks).
    page.reload()
    page.wait_for_selector("#jp-main-dock-panel")
    page.get_by_text("Nbgrader", exact=True).click()
    page.get_by_text("Assignment List", exact=True).click()
    fetched = page.locator("#fetched_assignments_list .list_item:not(.nested_list_item)", has_text=A)
    fetched.wait_for()
    notebook_row = page.locator("#fetched_assignments_list .nested_list_item", has_text=A)
    if not notebook_row.is_visible():
        fetched.locator("a").first.click()  # expand the assignment to list its notebooks
    notebook_row.get_by_role("button", name="Validate").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=180_000)
    text = dialog.inner_text()
    assert "Success" in text or "passes" in text, text
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "hub-validate.png"))
    dialog.get_by_role("button").last.click()

    fetched.get_by_role("button", name="Submit").click()
    page.locator("#submitted_assignments_list .list_item:not(.nested_list_item)", has_text=A).wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "hub-submitted.png"))
    inbound = list((course_hub["exchange"] / "cvcourse-week3" / "inbound").glob(f"{STUDENT}+{A}+*"))
    assert inbound, "the submission did not reach the exchange"


def test_instructor_collects_autogrades_exports_and_gives_feedback(course_hub, tmp_path):
    course = course_hub["course"]
    assert cli.main(["--course-dir", str(course), "collect", A]) == 0
    assert (course / "submitted" / STUDENT / A / f"{A}.ipynb").exists()
    results = cli.autograde(course, A)
    assert [(r.student, r.status, r.score) for r in results] == [(STUDENT, "graded", 10.0)]
    grades = tmp_path / "grades.csv"
    assert cli.main(["--course-dir", str(course), "export", str(grades)]) == 0
    rows = [r for r in csv.DictReader(grades.open()) if r["student_id"] == STUDENT and r["assignment"] == A]
    assert len(rows) == 1 and float(rows[0]["score"]) == 10.0
    assert cli.main(["--course-dir", str(course), "feedback", A]) == 0
    assert (course / "feedback" / STUDENT / A / f"{A}.html").is_file()
    released = list((course_hub["exchange"] / "cvcourse-week3" / "feedback").glob("*.html"))
    assert released, "feedback was not released to the exchange"

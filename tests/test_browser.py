"""The app in a real browser: Debian's Chromium driven by Playwright against `streamlit run`."""

import os
import shutil
from pathlib import Path

import pytest

from conftest import served_app

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# How long to wait for something the page must show: a guard against a hung server, not a speed
# claim. Opening the chat page loads SmolLM2, which takes seconds on an idle machine and minutes on
# a loaded one.
GUARD_MS = 240_000
PAGES = {"chat": "", "attention": "attention", "runs": "runs", "evaluation": "evaluation",
         "throughput": "throughput", "carbon": "carbon", "models": "models"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def server(tiny_runs_dir):
    with served_app(tiny_runs_dir) as (_, url):
        yield url


@pytest.fixture(scope="module")
def browser(chromium):
    """The session's one Chromium (conftest): a second sync Playwright in one process is refused."""
    return chromium


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]', timeout=GUARD_MS)
    return page


def _settled(page):
    """Wait until Streamlit has finished running the page's script."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=GUARD_MS)


def test_every_page_renders_and_chat_streams(server, browser):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = _open(browser, server)
    box = page.locator('[data-testid="stChatInputTextArea"]')
    box.wait_for(timeout=GUARD_MS)
    # the page opens on the bundled SmolLM2; the tiny trained run replies fast on any machine
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="run: tiny-hamlet").click()
    page.get_by_text("trained here from scratch on Shakespeare").wait_for(timeout=GUARD_MS)
    _settled(page)
    box.fill("HAMLET:")
    box.press("Enter")
    page.locator('[data-testid="stChatMessage"]').nth(1).wait_for(timeout=GUARD_MS)
    page.get_by_text("tokens/s").first.wait_for(timeout=GUARD_MS)
    reply = page.locator('[data-testid="stChatMessage"]').nth(1).inner_text()
    assert len(reply.strip()) > 10
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)
    for name, path in PAGES.items():
        if name == "chat":
            continue
        page.goto(f"{server}/{path}")
        page.locator('[data-testid="stMain"] h1').first.wait_for(timeout=GUARD_MS)  # the page's title: it ran
        _settled(page)
        assert page.locator('[data-testid="stException"]').count() == 0, name
        if name in ("attention", "runs", "carbon"):
            page.locator(".js-plotly-plot").first.wait_for(timeout=GUARD_MS)
        if name in ("runs", "carbon", "models"):
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=GUARD_MS)
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    page.close()


def test_non_utf8_upload_gets_a_message(server, browser):
    page = _open(browser, f"{server}/attention")
    page.locator('input[type="file"]').set_input_files(
        files=[{"name": "bad.txt", "mimeType": "text/plain", "buffer": b"To be \xff\xfe or not"}])
    page.get_by_text("is not UTF-8 text").wait_for(timeout=GUARD_MS)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()


def test_a_link_to_a_page_works_as_the_first_request(tiny_runs_dir, browser):
    """A fresh server whose first visitor opens /runs still runs main.py: its navigation, icons included."""
    with served_app(tiny_runs_dir) as (_, url):
        page = _open(browser, f"{url}/runs")
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=GUARD_MS)  # the runs table
        assert page.locator('[data-testid="stException"]').count() == 0
        links = page.locator('[data-testid="stSidebarNavLink"]')
        titles = [t.split()[-1] for t in links.all_inner_texts()]  # an icon's name, then the title
        # main.py's navigation (titles, icons), not the file names Streamlit lists in its older mode
        assert titles[0] == "Chat" and "Runs" in titles and "main" not in titles, titles
        assert page.locator('[data-testid="stSidebarNav"] [data-testid="stIconMaterial"]').count() == len(titles)
        page.close()

"""One real browser session: headless Chromium (Debian's) loads the page, runs
a sentiment request and a chat turn, and saves a screenshot to artifacts/."""

from __future__ import annotations

import contextlib
import shutil

from tests.conftest import ARTIFACTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@contextlib.contextmanager
def browser_page(url: str, locale: str = "en-US", height: int = 900, timezone: str | None = None):
    """A headless Chromium page (Debian's binary) opened at ``url``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(locale=locale, viewport={"width": 1280, "height": height}, timezone_id=timezone)
            page.set_default_timeout(30_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def test_sentiment_and_chat_in_a_real_browser(live_app):
    from playwright.sync_api import expect

    with browser_page(live_app.url) as page:
        expect(page.locator("#model-status")).to_contain_text("tiny-qwen2@test")

        page.locator("#sentiment-input textarea").fill("The room was clean and the staff were kind.")
        page.locator("#sentiment-run").click()
        expect(page.locator("#sentiment-label")).to_contain_text("positive")
        expect(page.locator("#sentiment-label")).to_contain_text("negative")
        page.screenshot(path=str(ARTIFACTS / "browser-sentiment.png"), full_page=True)

        page.locator("#sentiment-input textarea").fill("great\nterrible\nok")
        page.locator("#sentiment-run").click()
        expect(page.locator("#sentiment-table")).to_contain_text("terrible")
        expect(page.locator("#sentiment-table")).to_contain_text("Label / 标签")
        expect(page.locator("#sentiment-table")).not_to_contain_text("__i18n__")

        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input textarea").fill("Hello there")
        page.locator("#chat-input textarea").press("Enter")
        bot = page.locator("#chat-chatbot .bot").first
        expect(bot).to_be_visible()
        expect(page.locator("#chat-chatbot")).to_contain_text("Hello there")
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "browser-chat.png"), full_page=True)


def test_the_ui_speaks_chinese(live_app):
    from playwright.sync_api import expect

    with browser_page(live_app.url, locale="zh-CN") as page:
        expect(page.locator("#sentiment-run")).to_have_text("分析")
        expect(page.get_by_role("tab", name="对话")).to_be_visible()
        expect(page.locator("#model-status")).to_contain_text("就绪")  # the status line too, in one language
        expect(page.locator("#model-status")).not_to_contain_text("Ready")
        page.screenshot(path=str(ARTIFACTS / "browser-zh.png"), full_page=True)


def test_status_times_are_the_viewers_local_time(live_app):
    """A viewer far from the server sees the self-test's time in their own zone, in the summary and the table."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    import httpx
    from playwright.sync_api import expect

    with browser_page(live_app.url, timezone="Pacific/Kiritimati") as page:  # UTC+14: never the server's day-time
        page.get_by_role("tab", name="Status").click()
        expect(page.locator("#status-summary")).to_contain_text("ready")
        at = httpx.get(live_app.url + "/ready").json()["last_self_test"]["at"]
        local = dt.datetime.fromtimestamp(at, ZoneInfo("Pacific/Kiritimati")).strftime("%H:%M")
        expect(page.locator("#status-summary")).to_contain_text(local)
        expect(page.locator("#status-self-tests")).to_contain_text(local)


def test_the_status_tab_shows_a_drill_break_and_heal(drill_app):
    """The classroom demonstration: wrong token refused, the `error` drill breaks the model,
    the watchdog notices, and the history shows the recovery, all from the Status tab."""
    from playwright.sync_api import expect

    with browser_page(drill_app.url, height=1200) as page:
        page.get_by_role("tab", name="Status").click()
        expect(page.locator("#status-summary")).to_contain_text("ready")
        expect(page.locator("#status-summary")).to_contain_text("tiny-qwen2@test")
        expect(page.locator("#status-self-tests")).to_contain_text("✓ self-test")
        expect(page.locator("#status-history")).to_contain_text("✓ loaded")

        page.locator("#status-drills").click()
        page.locator("#status-token input").fill("not the token")
        page.locator("#status-drill-error").click()
        expect(page.locator("#status-drill-outcome")).to_contain_text("valid admin token")

        page.locator("#status-token input").fill("drill")
        page.locator("#status-drill-error").click()
        expect(page.locator("#status-drill-outcome")).to_contain_text("injected")
        # The 1 s self-test finds the fault; the timer-refreshed tables show detect -> recover.
        # Recovery starts a fresh worker process (seconds, even on the tiny model), and the tab
        # refreshes every 3 s: wait for it that long, not the default 5 s.
        recovery = 30_000
        expect(page.locator("#status-history")).to_contain_text("✗ recovering")
        expect(page.locator("#status-history")).to_contain_text("✓ recovered", timeout=recovery)
        expect(page.locator("#status-self-tests")).to_contain_text("✗ self-test")
        expect(page.locator("#status-summary")).to_contain_text("ready", timeout=recovery)
        page.screenshot(path=str(ARTIFACTS / "browser-status.png"), full_page=True)

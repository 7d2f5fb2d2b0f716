"""Real browser sessions: headless Chromium (Debian's) drives the app as a class would, in Chinese from
Shanghai and in English from New York: every tab in one language, no raw translation key, the plots' times
those of the tables, files in and out. Screenshots go to artifacts/ (the README's come from here)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import re
import shutil
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import ARTIFACTS
from ui.i18n import table

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
VIEWERS = {"zh": ("zh-CN", "Asia/Shanghai"), "en": ("en-US", "America/New_York")}
TABS = {"zh": ["情感分析", "对话", "任务", "状态"], "en": ["Sentiment", "Chat", "Tasks", "Status"]}
CLOCK = re.compile(r"^\d\d:\d\d:\d\d$")
TABLE_CLOCK = re.compile(r"^\s*\d\d:\d\d:\d\d\s*$")  # a table's cell text has spaces around it
MIXED = re.compile(r"[A-Za-z][^\n/]* / [^\n/]*[\u4e00-\u9fff]|[\u4e00-\u9fff][^\n/]* / [^\n/]*[A-Za-z]")


@contextlib.contextmanager
def browser_page(url: str, locale: str = "en-US", height: int = 900, timezone: str | None = None):
    """A headless Chromium page (Debian's binary) opened at ``url``."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(locale=locale, viewport={"width": 1280, "height": height}, timezone_id=timezone,
                                    accept_downloads=True)
            page.set_default_timeout(30_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def _other_language(lang: str) -> set[str]:
    """Our strings in the other language that a page in ``lang`` must not show (those the two share aside)."""
    other = table()["zh" if lang == "en" else "en"]
    ours = set(table()[lang].values())
    return {value for key, value in other.items() if not key.startswith("detail.") and value not in ours}


# Every text node and every text attribute of the page, hidden ones too (not the scripts: Gradio's config
# carries the translation keys the page translates).
PAGE_TEXT_JS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement.closest('script, style')) out.push(node.textContent);
  }
  for (const element of document.body.querySelectorAll('*'))
    for (const name of ['aria-label', 'title', 'placeholder', 'alt', 'value'])
      if (element.getAttribute(name)) out.push(element.getAttribute(name));
  return out.join('\\n');
}"""


def _check_one_language(page, lang: str, where: str) -> None:
    assert "__i18n__" not in page.evaluate(PAGE_TEXT_JS), f"a raw translation key on {where}"
    lines = [line.strip() for line in page.locator("body").inner_text().splitlines() if line.strip()]
    assert [line for line in lines if MIXED.search(line)] == [], f"an 'English / 中文' pair on {where}"
    foreign = _other_language(lang)
    assert [line for line in lines if line in foreign] == [], f"the other language on {where}"


def _seconds(clock: str) -> int:
    h, m, s = map(int, clock[-8:].split(":"))
    return h * 3600 + m * 60 + s


def _plot_times_match_table_times(page, zone: str) -> None:
    """Every time on the plots' axes is near a time in the tables (and the viewer's clock now): an offset
    applied twice would be hours away."""
    from playwright.sync_api import expect

    ticks = page.locator("#status-memory svg text").filter(has_text=CLOCK)
    expect(ticks.first).to_be_visible()
    cells = page.locator("#status-self-tests").get_by_role("gridcell").filter(has_text=TABLE_CLOCK)
    expect(cells.first).to_be_visible()
    shown = [cell.strip() for cell in cells.all_text_contents()]
    now = dt.datetime.now(ZoneInfo(zone))
    table_times = [_seconds(cell) for cell in shown] + [now.hour * 3600 + now.minute * 60 + now.second]
    for tick in ticks.all_text_contents():
        gap = min(min(abs(_seconds(tick) - t), 86_400 - abs(_seconds(tick) - t)) for t in table_times)
        assert gap < 15 * 60, f"the plot says {tick}, the tables {shown} ({zone})"


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_tab_speaks_one_language_and_shows_local_times(live_app, lang):
    from playwright.sync_api import expect

    locale, zone = VIEWERS[lang]
    with browser_page(live_app.url, locale=locale, timezone=zone, height=1000) as page:
        expect(page.locator("#model-status")).to_contain_text("tiny-qwen2@test")
        page.locator("#sentiment-input textarea").fill("great\nterrible")
        page.locator("#sentiment-run").click()  # results on the page, and a point on the latency plot
        expect(page.locator("#sentiment-table")).to_contain_text("terrible")
        for i, name in enumerate(TABS[lang]):
            page.get_by_role("tab", name=name).click()
            page.wait_for_timeout(1500)  # the tab's refresh (the Status tab's timer) has come back
            if name in ("状态", "Status"):
                expect(page.locator("#status-summary")).to_contain_text("tiny-qwen2@test")
                _plot_times_match_table_times(page, zone)
            _check_one_language(page, lang, name)
            page.screenshot(path=str(ARTIFACTS / f"browser-{lang}-{i}-{TABS['en'][i].lower()}.png"), full_page=True)


def test_chinese_labels_results_and_the_chat_box(live_app):
    from playwright.sync_api import expect

    with browser_page(live_app.url, locale="zh-CN", timezone="Asia/Shanghai") as page:
        expect(page.locator("#sentiment-run")).to_have_text("分析")
        expect(page.locator("#model-status")).to_contain_text("就绪")
        page.locator("#sentiment-input textarea").fill("这家店的服务很周到，下次还来。")
        page.locator("#sentiment-run").click()
        label = page.locator("#sentiment-label")
        expect(label).to_contain_text("正面")  # the task's display names, not the label ids
        expect(label).to_contain_text("负面")
        expect(label).not_to_contain_text("positive")
        page.screenshot(path=str(ARTIFACTS / "browser-zh-sentiment.png"), full_page=True)

        page.get_by_role("tab", name="对话").click()
        expect(page.locator("#chat-chatbot")).to_contain_text("对话记录")
        expect(page.locator("span", has_text=re.compile(r"^任务$"))).to_have_count(1)  # one task accordion
        page.locator("#chat-input textarea").fill("你好")
        page.locator("#chat-input textarea").press("Enter")
        expect(page.locator("#chat-chatbot .bot").first).to_be_visible()


def _upload(page, prefix: str, path) -> None:
    page.locator(f"#{prefix}-file input[type=file]").set_input_files(str(path))
    page.locator(f"#{prefix}-file-run").click()


def test_a_file_in_and_a_csv_out_in_chinese(live_app, tmp_path):
    from playwright.sync_api import expect

    reviews = tmp_path / "评论.txt"
    reviews.write_text("The room was clean.\n\n太失望了。\nGreat food!\n", encoding="utf-8")
    with browser_page(live_app.url, locale="zh-CN", timezone="Asia/Shanghai", height=1200) as page:
        _upload(page, "sentiment", reviews)
        expect(page.locator("#sentiment-file-done")).to_have_text("已分类 3 行。")
        table_ = page.locator("#sentiment-file-table")
        expect(table_).to_contain_text("太失望了。")
        expect(table_).to_contain_text("置信度")
        assert re.search("正面|负面", table_.inner_text()) and "positive" not in table_.inner_text()
        expect(page.locator("#sentiment-file-counts svg text").filter(has_text="正面")).to_be_visible()
        _check_one_language(page, "zh", "the Sentiment tab with a file")
        page.screenshot(path=str(ARTIFACTS / "browser-zh-file.png"), full_page=True)
        with page.expect_download() as download:
            page.locator("#sentiment-file-csv").click()
        saved = tmp_path / "out.csv"
        download.value.save_as(saved)
        rows = list(csv.DictReader(saved.open(encoding="utf-8-sig")))
        assert [r["text"] for r in rows] == ["The room was clean.", "太失望了。", "Great food!"]
        assert {r["label"] for r in rows} <= {"positive", "negative"} and rows[0]["mode"] == "prompt"

        too_long = tmp_path / "long.txt"
        too_long.write_text("fine\n" + "长" * 4001 + "\n", encoding="utf-8")
        page.locator('#sentiment-file button[aria-label="清除"]').click()  # Gradio's own "clear", in Chinese
        _upload(page, "sentiment", too_long)
        expect(page.locator("#sentiment-file-panel")).to_contain_text("第 2 行有 4001 个字符，每行的上限是 4000 个字符。")


def test_a_csv_file_on_the_tasks_tab_in_english(live_app, tmp_path):
    from playwright.sync_api import expect

    reviews = tmp_path / "reviews.csv"
    reviews.write_text('id,text,stars\n1,"Great food, friendly staff",5\n2,Cold soup,1\n', encoding="utf-8")
    with browser_page(live_app.url, locale="en-US", timezone="America/New_York", height=1200) as page:
        page.get_by_role("tab", name="Tasks").click()
        _upload(page, "tasks", reviews)
        expect(page.locator("#tasks-file-done")).to_have_text("2 lines classified.")
        expect(page.locator("#tasks-file-table")).to_contain_text("Great food, friendly staff")
        expect(page.locator("#tasks-file-table")).to_contain_text("Answered by")
        _check_one_language(page, "en", "the Tasks tab with a file")
        page.screenshot(path=str(ARTIFACTS / "browser-en-tasks-file.png"), full_page=True)


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
        expect(page.locator("#sentiment-table")).to_contain_text("Label")
        expect(page.locator("#sentiment-table")).not_to_contain_text("标签")

        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input textarea").fill("Hello there")
        page.locator("#chat-input textarea").press("Enter")
        bot = page.locator("#chat-chatbot .bot").first
        expect(bot).to_be_visible()
        expect(page.locator("#chat-chatbot")).to_contain_text("Hello there")
        page.wait_for_timeout(500)
        page.screenshot(path=str(ARTIFACTS / "browser-chat.png"), full_page=True)


def test_status_times_are_the_viewers_local_time(live_app):
    """A viewer far from the server sees the self-test's time in their own zone, in the summary and the table."""
    import httpx
    from playwright.sync_api import expect

    with browser_page(live_app.url, timezone="Pacific/Kiritimati") as page:  # UTC+14: never the server's day-time
        page.get_by_role("tab", name="Status").click()
        expect(page.locator("#status-summary")).to_contain_text("ready")
        at = httpx.get(live_app.url + "/ready").json()["last_self_test"]["at"]
        local = dt.datetime.fromtimestamp(at, ZoneInfo("Pacific/Kiritimati")).strftime("%H:%M")
        expect(page.locator("#status-summary")).to_contain_text(local)
        expect(page.locator("#status-self-tests")).to_contain_text(local)
        _plot_times_match_table_times(page, "Pacific/Kiritimati")


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

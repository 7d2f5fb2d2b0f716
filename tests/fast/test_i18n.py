"""One language at a time: the string table, label names from the task, texts from ops/ shown in Chinese,
and times (tables and plots) in the viewer's zone."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from engine.tasks import load_tasks
from ui.i18n import detail, label_names, language_of, table, text
from ui.status_tab import EVENT_COLUMNS, event_frame, headers, latency_frame, memory_frame, summary_markdown
from ui.viewer import Viewer, plot_times, viewer_of

UI = Path(__file__).resolve().parents[2] / "ui"
CJK = re.compile(r"[\u4e00-\u9fff]")
SHANGHAI = Viewer(ZoneInfo("Asia/Shanghai"), True)


def _names(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))


def test_every_string_has_both_languages_with_the_same_placeholders():
    english, chinese = table()["en"], table()["zh"]
    assert set(english) == set(chinese) and len(english) > 100
    for key in english:
        assert _names(english[key]) == _names(chinese[key]), key
        assert " / " not in english[key] or not CJK.search(english[key]), f"a mixed pair in {key}"
        assert not CJK.search(english[key]), f"Chinese in the English {key}"
        assert CJK.search(chinese[key]) or chinese[key] == english[key] == "MiB", f"no Chinese in {key}"


def test_every_key_the_ui_names_is_in_the_table():
    used = set()
    for source in UI.glob("*.py"):
        used |= set(re.findall(r"""\b(?:t|text)\(\s*["']([\w.\-]+)["']""", source.read_text(encoding="utf-8")))
        used |= set(re.findall(r"""FileRefused\(\s*["']([\w.\-]+)["']""", source.read_text(encoding="utf-8")))
    assert len(used) > 40
    assert sorted(used - set(table()["en"])) == []


def test_browser_languages():
    assert [language_of(x) for x in ("zh-CN", "zh", "zh-TW", "ZH-hk", "en-US", "fr", "", None)] == \
        ["zh", "zh", "zh", "zh", "en", "en", "en", "en"]
    assert viewer_of('{"tz": "Asia/Shanghai", "lang": "zh-CN"}') == SHANGHAI
    assert viewer_of("[1, 2]") == Viewer() and viewer_of('{"tz": "Mars/Base"}') == Viewer()
    assert text("file.done", "zh", count=3) == "已分类 3 行。" and text("file.done", "fr", count=3) == "3 lines classified."


def test_the_self_test_and_head_texts_of_ops_are_shown_in_chinese(tmp_path):
    """The wording is pinned to the code that writes it: a change there fails here, not silently in the UI."""
    from engine.heads import FORMAT, HeadFile, find_head
    from engine.tasks import ClassifyTask, HeadExamples
    from ops.serving.watchdog import Probes

    passed = Probes((("sentiment", "good", "positive"),) * 4, (("chat", "hi", 4),)).run(_AlwaysPositive())
    assert passed == "4 classify + 1 generate probes passed"
    assert detail(passed, "zh") == "4 项分类和 1 项生成自检全部通过" and detail(passed, "en") == passed

    head = HeadFile("sentiment", "x", "qwen@1", "id", "int8", ["positive", "negative"], 1600, 1e-3, 0.9, 0.887,
                    "2026-12-06T10:00:00Z", [[0.0]], [0.0], FORMAT, layer=15)
    assert detail(head.describe(), "zh") == ("线性头读取第 15 层，2026-12-06 用 1600 条样例在 qwen@1（int8）上训练；"
                                            "交叉验证准确率 0.887")
    last = HeadFile(**{**head.__dict__, "layer": None})
    assert "最后一层和标签得分" in detail(last.describe(), "zh")

    examples = HeadExamples(tmp_path / "e.jsonl", (), "sha", tmp_path / "heads")
    task = ClassifyTask("topic", "Topic", ("a", "b"), "i", head_examples=examples)
    missing = find_head(task, "0123456789abcdef0123")[1].detail
    assert detail(missing, "zh") == ("本模型尚未训练线性头（`topic@0123456789abcdef.json`）；"
                                     "用 `python -m ops.heads fit --task topic` 训练")
    none = find_head(ClassifyTask("t", "T", ("a", "b"), "i"), "id")[1].detail
    assert CJK.search(detail(none, "zh"))


def test_unknown_wording_shows_as_written():
    assert detail("something new happened", "zh") == "something new happened"
    assert detail("self-test failed: sentiment('x') gave b, expected a", "zh") == \
        "自检失败：sentiment('x') gave b, expected a"


class _AlwaysPositive:
    def classify(self, task, texts, mode=None):
        from engine.kinds.classify import ClassifyResult

        return [ClassifyResult(task, "positive", 0.9, {"positive": 0.9, "negative": 0.1}, False) for _ in texts]

    def generate(self, task, message, history=None, options=None):
        from engine.chat import ChatUpdate

        yield ChatUpdate("hi", "hi", True, "stop")


def test_label_names_come_from_the_task_and_the_api_keeps_ids():
    sentiment = {i.name: i for i in load_tasks().infos()}["sentiment"]
    assert label_names(sentiment, "zh") == {"positive": "正面", "negative": "负面"}
    assert label_names(sentiment, "en") == {"positive": "positive", "negative": "negative"}
    assert sentiment.labels == ("positive", "negative")


def test_the_status_tab_speaks_one_language():
    snapshot = {"state": "ready", "model": "m@1", "uptime_s": 5, "consecutive_failures": 0,
                "last_self_test": {"passed": True, "at": 0.0, "duration_s": 0.3,
                                   "detail": "4 classify + 1 generate probes passed"},
                "heads": {"sentiment": {"status": "missing", "detail": "no head fitted for this model yet (s@1.json); "
                                                                       "fit one with `python -m ops.heads fit`"}}}
    chinese = summary_markdown(snapshot, SHANGHAI)
    english = summary_markdown(snapshot)
    assert chinese.startswith("### 就绪") and "情感分析的线性头" in chinese and "未训练" in chinese
    assert english.startswith("### ready") and "Head of Sentiment" in english
    words = {v for k, v in table()["en"].items() if not k.startswith("detail.") and len(v) > 3}
    assert [w for w in words if re.search(rf"\b{re.escape(w)}\b", chinese)] == []  # no English word of ours
    frame = event_frame([{"at": 0.0, "kind": "self-test", "ok": True, "detail": "2 classify + 0 generate probes "
                                                                                 "passed"}], SHANGHAI)
    assert list(frame.columns) == headers(EVENT_COLUMNS, SHANGHAI) == ["时间", "事件", "详情"]
    assert frame.iloc[0, 1:].tolist() == ["✓ 自检", "2 项分类和 0 项生成自检全部通过"]


def test_plots_get_instants_and_the_browser_draws_them_in_its_zone():
    """The bug this fixes: the axis was given Shanghai wall-clock times as if they were UTC, and the browser
    in Shanghai added eight hours again (tables 17:18, axes 01:16)."""
    at = 1_796_548_680.0  # 2026-12-06 09:18 UTC: 17:18 in Shanghai
    assert SHANGHAI.clock(at, now=at) == "17:18:00"
    for viewer in (SHANGHAI, Viewer(ZoneInfo("America/New_York")), Viewer()):
        axis = memory_frame([{"time": at, "process": "worker", "rss_mib": 1.0}], viewer)["time"]
        assert axis.iloc[0] == pd.Timestamp("2026-12-06 09:18:00", tz="UTC")
    assert latency_frame([{"time": at, "task": "chat", "mean_s": 1, "max_s": 1, "requests": 1}], SHANGHAI)[
        "task"].tolist() == ["对话"]
    assert plot_times(pd.Series([at])).dt.tz is not None

"""The Tasks tab's teach panel (ui/teach.py): what its buttons send to the admin actions and what they show, in
both languages, on a fake admin (the routes themselves are tested in test_teach_live.py)."""

from __future__ import annotations

import gradio as gr

from ui.teach import build_teach_panel, fit_and_report, save_examples
from ui.viewer import Viewer

ENGLISH, CHINESE = Viewer(), Viewer(chinese=True)
REPORT = {"layer": 11, "cv_accuracy": 0.95, "labels": ["film", "product"], "confusion": [[30, 2], [1, 31]],
          "held_out": {"examples": 16, "prompt_accuracy": 0.5, "head_accuracy": 0.9375}, "seconds": 41.2}


class Denied(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FakeAdmin:
    enabled, teacher = True, object()

    def __init__(self, stages=("reading", "fitting", "done")) -> None:
        self.calls, self._stages = [], list(stages)

    def put_task(self, name, table, token, client="unknown"):
        if token != "secret":
            raise Denied("A valid admin token is required.")
        self.calls.append(("put_task", name, table))
        return {"task": name, "change": "added"}

    def put_examples(self, name, body, content_type, token, client="unknown"):
        self.calls.append(("put_examples", name, body))
        return {"task": name, "examples": 20, "per_label": {"film": 10, "product": 10}}

    def fit(self, name, token, client="unknown"):
        self.calls.append(("fit", name))
        return {"task": name}

    def get_task(self, name, token, client="unknown"):
        stage = self._stages.pop(0)
        fit = {"stage": stage, "fraction": {"reading": 0.4, "fitting": 0.9}.get(stage, 1.0)}
        return {"fit": {**fit, "result": REPORT} if stage == "done" else {**fit, "error": "the model changed"}}


def test_save_defines_the_task_then_sends_the_pasted_lines_or_the_file(tmp_path):
    admin = FakeAdmin()
    shown = save_examples(admin, ENGLISH, "secret", " topic ", "film, product ,", "Film or product?",
                          "a great movie\tfilm", None)
    assert admin.calls == [("put_task", "topic", {"kind": "classify", "labels": ["film", "product"],
                                                  "instruction": "Film or product?"}),
                           ("put_examples", "topic", b"a great movie\tfilm")]
    assert shown == "✓ `topic`: 20 examples saved (film 10, product 10). Now fit its head."
    upload = tmp_path / "examples.csv"
    upload.write_bytes(b"text,label\n")
    save_examples(admin, CHINESE, "secret", "topic", "film,product", "x", "ignored", str(upload))
    assert admin.calls[-1] == ("put_examples", "topic", b"text,label\n")
    assert save_examples(admin, ENGLISH, "wrong", "topic", "a,b", "x", "", None) == \
        "✗ A valid admin token is required."
    assert save_examples(admin, CHINESE, "secret", " ", "a,b", "x", "", None) == "✗ 请填写任务名。"


def test_fit_follows_the_progress_and_shows_the_report_and_its_confusion_matrix():
    seen = []
    summary, matrix = fit_and_report(FakeAdmin(), CHINESE, "secret", "topic",
                                     lambda fraction, desc: seen.append((fraction, desc)), sleep=lambda s: None)
    assert seen == [(0.4, "正在用模型读取样例"), (0.9, "正在选择层并训练线性头")]
    assert "线性头读取第 11 层" in summary and "提示词 0.500，线性头 0.938" in summary
    assert matrix.to_dict("records")[1] == {"truth": "film", "answer": "product", "count": 2}
    failed, none = fit_and_report(FakeAdmin(("reading", "failed")), ENGLISH, "secret", "topic",
                                  lambda *a, **k: None, sleep=lambda s: None)
    assert failed == "✗ The fit failed: the model changed" and none is None


def test_the_panel_is_built_only_for_an_admin_who_can_change_tasks():
    with gr.Blocks() as with_admin:
        build_teach_panel(FakeAdmin(), gr.Textbox(visible=False))
    with gr.Blocks() as without:
        build_teach_panel(None, gr.Textbox(visible=False))
    ids = lambda demo: {getattr(b, "elem_id", None) for b in demo.blocks.values()}  # noqa: E731
    assert {"tasks-teach", "teach-fit", "teach-confusion"} <= ids(with_admin)
    assert "tasks-teach" not in ids(without)

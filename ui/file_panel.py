"""Files in and out for classify tasks: the file panel of a classify tab and the ``/classify_file`` API.

A file is read and checked (``ui.files``) at the queue's door, then classified ``max_lines`` texts at
a time, one request each, so it takes its turn beside other users' requests; a progress bar follows
it. The panel shows a table, a bar chart of the label counts and the CSV (text, label, confidence,
mode: label ids, as the API answers), which is also what ``/classify_file`` returns.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import gradio as gr
import pandas as pd

from engine.errors import WorkerLost
from engine.kinds.classify import ClassifyResult
from engine.types import ClassifyMode, Inference, TaskInfo
from ui.errors import friendly_errors
from ui.files import FILE_TYPES, FileLimits, FileRefused, batches, label_counts, read_texts, results_csv
from ui.i18n import t
from ui.viewer import Viewer, viewer_of

if TYPE_CHECKING:
    from engine.kinds.base import RequestLimits

__all__ = ["FileDoor", "FILES_POOL", "FILE_SLOTS", "UPLOAD_CAP_BYTES", "Row", "results_frame"]

FILES_POOL = "classify-files"  # every file event, UI and API, shares these slots
FILE_SLOTS = 2  # files classified at once; the rest wait in Gradio's queue, which shows their place
# Gradio's own cap on an upload (it refuses past it, before any handler): room for a file over its limit
# (``FileLimits.max_bytes``) to be refused by name, and no more.
UPLOAD_CAP_BYTES = 4 * FileLimits().max_bytes
KEEP_RESULTS_S = 600.0  # Gradio copies a returned file into its cache at once; ours are only kept this long

Row = tuple[str, str, float, str]  # text, label, confidence, mode: a line of the CSV


class FileDoor:
    """Classifies files for every panel and the API: the limits, the batches and the results' files."""

    def __init__(self, service: Inference, limits: "RequestLimits", file_limits: FileLimits | None = None) -> None:
        self.service = service
        self.limits = limits
        self.file_limits = file_limits or FileLimits(max_chars=limits.max_message_chars)
        self._results: tempfile.TemporaryDirectory | None = None

    def texts(self, path: str | None) -> tuple[str, ...]:
        if not path:
            raise FileRefused("file.none")
        return read_texts(Path(path).name, Path(path).read_bytes(), self.file_limits)

    def classify(self, task: str, path: str | None, mode: str, progress: Callable, viewer: Viewer) -> list[Row]:
        """Every text of the file at ``path``, a request of ``max_lines`` texts at a time."""
        texts = self.texts(path)
        rows: list[Row] = []
        progress((0, len(texts)), desc=viewer.text("file.progress"), unit=viewer.text("file.unit"))
        for batch in batches(texts, self.limits.max_lines):
            results = self._classify(task, batch, mode)
            rows += [(line, r.label, r.confidence, r.mode.value) for line, r in zip(batch, results)]
            progress((len(rows), len(texts)), desc=viewer.text("file.progress"), unit=viewer.text("file.unit"))
        return rows

    def _classify(self, task: str, batch: Sequence[str], mode: str) -> list[ClassifyResult]:
        try:
            return self.service.classify(task, batch, mode)
        except WorkerLost:
            # A recovery stopped this request in the old worker: a classification is safe to repeat, and
            # the service waits for the new one; a long file does not lose what it has done for that.
            return self.service.classify(task, batch, mode)

    def write(self, rows: list[Row], source: str) -> str:
        """The results as a CSV file named after the upload; older ones are removed."""
        if self._results is None:
            self._results = tempfile.TemporaryDirectory(prefix="allinone-results-")
        folder = Path(self._results.name)
        for old in folder.glob("*/*.csv"):
            if time.time() - old.stat().st_mtime > KEEP_RESULTS_S:
                old.unlink(missing_ok=True)
                old.parent.rmdir()
        out = Path(tempfile.mkdtemp(dir=folder)) / f"{Path(source).stem}-labels.csv"
        out.write_text(results_csv(rows), encoding="utf-8-sig")
        return str(out)

    def validator(self, file_at: int, viewer_at: int | None = None) -> Callable:
        """A queue-door check of an event's file input (``file_at``), refused in the viewer's language."""

        def validate(*values):
            verdicts = [gr.validate(True, "") for _ in values]
            viewer = viewer_of(values[viewer_at]) if viewer_at is not None else Viewer()
            try:
                self.texts(values[file_at])
            except FileRefused as refused:
                verdicts[file_at] = gr.validate(False, viewer.text(refused.key, **refused.params))
            return tuple(verdicts) if len(verdicts) > 1 else verdicts[0]

        return validate

    def add_api(self, concurrency: int = FILE_SLOTS) -> None:
        """``/classify_file``: a file and a task name in, the results' CSV file out (label ids)."""
        with gr.Column(visible=False):
            upload = gr.File(label="file")  # any type: ours is refused by name (Gradio answers a bare 400)
            task = gr.Textbox(label="task")
            out = gr.File(label="csv")
            trigger = gr.Button(visible=False)

        @friendly_errors
        def classify_file(file: str, task: str, progress=gr.Progress()) -> str:
            """Classify every text of a .txt (one a line) or .csv (a `text` column) file with the classify
            task ``task``; returns a CSV of text, label, confidence and mode."""
            rows = self.classify(task, file, ClassifyMode.AUTO.value, progress, Viewer())
            return self.write(rows, file)

        trigger.click(classify_file, inputs=[upload, task], outputs=[out], api_name="classify_file",
                      concurrency_limit=concurrency, concurrency_id=FILES_POOL, validator=self.validator(0))

    def build_panel(self, task: str | gr.Dropdown, mode: gr.Radio, viewer_box: gr.Textbox, elem_id: str,
                    concurrency: int = FILE_SLOTS) -> None:
        """The panel, in the current Blocks context, for the task ``task`` (a name, or a dropdown)."""
        with gr.Accordion(t("file.panel"), open=True, elem_id=f"{elem_id}-file-panel"):
            with gr.Row():
                with gr.Column(scale=3):
                    upload = gr.File(file_types=list(FILE_TYPES), label=t("file.input"), height=120,
                                     elem_id=f"{elem_id}-file")
                    run = gr.Button(t("file.run"), variant="primary", elem_id=f"{elem_id}-file-run")
                    done = gr.Markdown(elem_id=f"{elem_id}-file-done")
                    download = gr.DownloadButton(t("file.download"), visible=False, elem_id=f"{elem_id}-file-csv")
                with gr.Column(scale=2):
                    counts = gr.BarPlot(x="label", y="count", x_title=t("col.label"), y_title=t("col.count"),
                                        label=t("file.counts"), y_lim=[0, None], height=220,
                                        elem_id=f"{elem_id}-file-counts")
            table = gr.Dataframe(label=t("table"), interactive=False, wrap=True, max_height=360, visible=False,
                                 elem_id=f"{elem_id}-file-table")
        inputs = [upload, gr.State(task) if isinstance(task, str) else task, mode, viewer_box]

        @friendly_errors
        def on_run(path: str | None, chosen: str, choice: str, raw: str, progress=gr.Progress()):
            viewer = viewer_of(raw)
            if not chosen:
                raise gr.Error(viewer.text("error.no_task"), print_exception=False)
            try:
                rows = self.classify(chosen, path, choice, progress, viewer)
            except FileRefused as refused:
                raise gr.Error(viewer.text(refused.key, **refused.params), print_exception=False) from None
            info = {i.name: i for i in self.service.task_infos()}[chosen]
            frame, bars = results_frame(rows, info, viewer), _counts_frame(rows, info, viewer)
            return (viewer.text("file.done", count=len(rows)), gr.update(value=self.write(rows, path), visible=True),
                    gr.update(value=bars, sort=list(bars["label"])), gr.update(value=frame, visible=True))

        run.click(on_run, inputs=inputs, outputs=[done, download, counts, table], api_visibility="private",
                  concurrency_limit=concurrency, concurrency_id=FILES_POOL,
                  validator=self.validator(0, 3))


def results_frame(rows: Sequence[Row], info: TaskInfo, viewer: Viewer) -> pd.DataFrame:
    """Results as a table in the viewer's language: its headers, the labels' names, the modes' names."""
    names = viewer.labels(info)
    columns = [viewer.text(key) for key in ("col.text", "col.label", "col.confidence", "col.mode")]
    return pd.DataFrame([[text_, names.get(label, label), round(confidence, 3), viewer.text(f"modes.{mode}")]
                         for text_, label, confidence, mode in rows], columns=columns)


def _counts_frame(rows: Sequence[Row], info: TaskInfo, viewer: Viewer) -> pd.DataFrame:
    """How many of each label, by its name in the viewer's language, in the task's label order."""
    names = viewer.labels(info)
    return pd.DataFrame([(names[label], count) for label, count in label_counts([r[1] for r in rows], info.labels)],
                        columns=["label", "count"])

"""The linear heads' command line (``engine.heads``): fit a classify task's head, list their states.

    python -m ops.heads fit [--task T] [--model-dir DIR] [--backend B] [--layer K | --last-layer] ...
    python -m ops.heads list [--model-dir DIR] [--tasks-file F]

``fit`` loads the model in this process, reads the task's examples through the serving passes, picks
the layer by cross-validation and stores the head for this model (4,000 examples: ~25 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.errors import AllInOneError
from engine.heads import LAYER_TOLERANCE, find_head, model_identity
from engine.tasks import DEFAULT_TASKS_FILE, ClassifyTask, load_tasks
from engine.types import TaskKind
from ops.common.paths import REPO_ROOT

__all__ = ["main"]


def _tasks_with_examples(tasks_file: Path, only: str | None) -> list[ClassifyTask]:
    registry = load_tasks(tasks_file)
    if only is not None:
        task = registry.get(only)
        if not isinstance(task, ClassifyTask) or task.head_examples is None:
            raise SystemExit(f"Task {only!r} is not a classify task with an 'examples_file' in {tasks_file}.")
        return [task]
    tasks = [t for t in registry.of_kind(TaskKind.CLASSIFY) if t.head_examples is not None]
    if not tasks:
        raise SystemExit(f"No classify task in {tasks_file} names an 'examples_file'.")
    return tasks


def _progress(task: str):
    started = time.monotonic()
    shown = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - shown[0] >= 5:
            shown[0] = now
            rate = done / max(now - started, 1e-9)
            print(f"  {task}: {done}/{total} examples read, about {(total - done) / rate:.0f} s left", flush=True)

    return show


def _fit(args) -> int:
    from engine.backends import open_backend
    from engine.backends.torch_head import fit_task_head
    from engine.heads import write_head

    tasks = _tasks_with_examples(args.tasks_file, args.task)
    print(f"Loading {args.model_dir} ({args.backend}, {args.precision}) ...", flush=True)
    backend = open_backend(args.backend, args.model_dir, precision=args.precision)
    backend.classifier.prepare(tasks, max_input_tokens=256)
    model_id = model_identity(backend.info.path)
    for task in tasks:
        print(f"Fitting the head of {task.name!r} on {len(task.head_examples.examples)} examples "
              f"({task.head_examples.path.name}) with {backend.info.label}, {backend.info.precision}:", flush=True)
        if args.layer is not None and not 0 < args.layer < backend.info.blocks:
            raise SystemExit(f"--layer {args.layer}: {backend.info.label} has layers 1 .. {backend.info.blocks - 1}")
        # --layer K: K and the last layer are cross-validated for the record, and K is kept whatever
        # their scores (the shallower candidate within any tolerance: engine.heads.choose_layer).
        layers, tolerance = ([], LAYER_TOLERANCE) if args.last_layer else (
            ([args.layer], 1.0) if args.layer is not None else (None, LAYER_TOLERANCE))
        head = fit_task_head(backend.classifier.scorer(task.name), task, backend.info, model_id, args.l2,
                             _progress(task.name), layers=layers, tolerance=tolerance)
        path = write_head(task, head)
        print("  cross-validated accuracy (5 folds) per layer: "
              + ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in head.layer_cv.items()), flush=True)
        print(f"  wrote {path}: a head on {head.reads}; accuracy {head.tuning_accuracy:.3f} on the examples, "
              f"{head.cv_accuracy:.3f} cross-validated", flush=True)
    print("A running app uses a new head from its next model load (POST /admin/reload).")
    return 0


def _list(args) -> int:
    model_id = model_identity(args.model_dir)
    for task in _tasks_with_examples(args.tasks_file, None):
        _, state = find_head(task, model_id)
        print(f"{task.name}: {state.status.value}: {state.detail}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.heads", description="Fit and list classify tasks' heads.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("fit", "fit a task's linear head on its examples file, for one model"),
                            ("list", "each task's head state for one model")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "current")
        p.add_argument("--tasks-file", type=Path, default=DEFAULT_TASKS_FILE)
        if name == "fit":
            from engine.backends.torch_head import DEFAULT_L2

            p.add_argument("--task", help="one task (default: every task with an examples_file)")
            p.add_argument("--backend", default="auto", choices=("auto", "torch", "llamacpp"),
                           help="the runtime whose hidden states are read (default: what the app's auto serves)")
            p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "int8"))
            choice = p.add_mutually_exclusive_group()
            choice.add_argument("--last-layer", action="store_true",
                                help="read the last layer and the label scores (no layer choice, no early exit)")
            choice.add_argument("--layer", type=int,
                                help="read this layer, chosen beforehand (bench/head_layers.py), not by this fit")
            p.add_argument("--l2", type=float, default=DEFAULT_L2, help=f"L2 penalty (default {DEFAULT_L2})")
    args = parser.parse_args(argv)
    try:
        return _fit(args) if args.command == "fit" else _list(args)
    except AllInOneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


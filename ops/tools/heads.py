"""The linear heads' command line (``engine.heads``): fit a classify task's head, list their states.

    python -m ops.heads fit [--task T] [--examples FILE] [--layer K | --last-layer] ... | list | rekey ...

``fit`` reads the task's examples file (or ``--examples``, a larger set that holds it) through the model
and stores the head for this model (4,000 examples: ~25 min on 2 cores). ``rekey --examples FILE``
records a head fitted on FILE again after the task's examples file became a part of FILE (no refit).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.errors import AllInOneError, ConfigError
from engine.heads import (LAYER_TOLERANCE, FittedOn, find_head, fitting_source, head_path, keyed_to_task,
                          model_identity, read_head, rekey, write_head)
from engine.tasks import DEFAULT_TASKS_FILE, ClassifyTask, HeadExamples, load_tasks, read_head_examples
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


def _shown(path: Path) -> str:
    """A file's name as a head records it: relative to the repository where it lies in it."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else path.name


def _examples(task: ClassifyTask, path: Path | None) -> tuple[HeadExamples, FittedOn]:
    """What to fit ``task``'s head on: ``path`` (its labels checked against the task; it must hold the task's
    examples file) or the task's examples file; and the record of it."""
    examples = task.head_examples if path is None else read_head_examples(path, task.labels,
                                                                          task.head_examples.heads_dir)
    return examples, fitting_source(task, examples, _shown(examples.path))


def _one_task(args) -> list[ClassifyTask]:
    tasks = _tasks_with_examples(args.tasks_file, args.task)
    if len(tasks) > 1:
        raise SystemExit(f"--examples is one task's: name it with --task ({', '.join(t.name for t in tasks)}).")
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

    tasks = _one_task(args) if args.examples is not None else _tasks_with_examples(args.tasks_file, args.task)
    sources = {task.name: _examples(task, args.examples) for task in tasks}  # refused before the model loads
    print(f"Loading {args.model_dir} ({args.backend}, {args.precision}) ...", flush=True)
    backend = open_backend(args.backend, args.model_dir, precision=args.precision)
    backend.classifier.prepare(tasks, max_input_tokens=256)
    model_id = model_identity(backend.info.path)
    for task in tasks:
        examples, source = sources[task.name]
        print(f"Fitting the head of {task.name!r} on {source.rows} examples ({source.file}) with "
              f"{backend.info.label}, {backend.info.precision}:", flush=True)
        if args.layer is not None and not 0 < args.layer < backend.info.blocks:
            raise SystemExit(f"--layer {args.layer}: {backend.info.label} has layers 1 .. {backend.info.blocks - 1}")
        # --layer K: K and the last layer are cross-validated for the record, and K is kept whatever
        # their scores (the shallower candidate within any tolerance: engine.heads.choose_layer).
        layers, tolerance = ([], LAYER_TOLERANCE) if args.last_layer else (
            ([args.layer], 1.0) if args.layer is not None else (None, LAYER_TOLERANCE))
        head = fit_task_head(backend.classifier.scorer(task.name), replace(task, head_examples=examples),
                             backend.info, model_id, args.l2, _progress(task.name), layers=layers, tolerance=tolerance)
        path = write_head(task, keyed_to_task(task, head, source))
        print("  cross-validated accuracy (5 folds) per layer: "
              + ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in head.layer_cv.items()), flush=True)
        print(f"  wrote {path}: a head on {head.reads}; accuracy {head.tuning_accuracy:.3f} on the examples, "
              f"{head.cv_accuracy:.3f} cross-validated", flush=True)
    print("A running app uses a new head from its next model load (POST /admin/reload).")
    return 0


def _list(args) -> int:
    model_id = model_identity(args.model_dir)
    for task in _tasks_with_examples(args.tasks_file, None):
        head, state = find_head(task, model_id)
        print(f"{task.name}: {state.status.value}: {state.detail}")
        own = task.head_examples
        key = f"the task's examples file {_shown(own.path)} ({len(own.examples)} rows, sha256 {own.sha256[:12]})"
        if head is not None and head.fitted_on is not None and head.fitted_on.sha256 != own.sha256:
            fitted = head.fitted_on
            print(f"  fitted on {fitted.file} ({fitted.rows} rows, sha256 {fitted.sha256[:12]}), which holds {key}")
        elif head is not None:
            print(f"  fitted on {key}")
    return 0


def _rekey(args) -> int:
    [task] = _one_task(args)
    examples, _ = _examples(task, args.examples)
    path = head_path(task, model_identity(args.model_dir))
    if not path.exists():
        raise ConfigError(f"No head of {task.name!r} for {args.model_dir} ({path.name}): nothing to record again.")
    head = read_head(path)
    keyed = rekey(task, head, examples, _shown(examples.path))
    if keyed == head:
        print(f"{path}: already recorded so; nothing changed.")
        return 0
    write_head(task, keyed)
    print(f"{path}: fitted on {keyed.fitted_on.file} ({keyed.fitted_on.rows} rows), as its record proves; it now "
          f"answers for the task's examples file {_shown(task.head_examples.path)} "
          f"({len(task.head_examples.examples)} rows). The weights are unchanged.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.heads", description="Fit and list classify tasks' heads.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("fit", "fit a task's linear head on its examples file, for one model"),
                            ("list", "each task's head state for one model"),
                            ("rekey", "record a head again after the task's examples file became a part of what "
                                      "it was fitted on (no refit; its record must prove what it was fitted on)")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "current")
        p.add_argument("--tasks-file", type=Path, default=DEFAULT_TASKS_FILE)
        if name != "list":
            p.add_argument("--task", help="one task (default: every task with an examples_file)")
            p.add_argument("--examples", type=Path, required=name == "rekey",
                           help="the examples the head is (rekey: was) fitted on, when not the task's examples "
                                "file: JSON lines with the task's labels, holding every row of that file "
                                "(datasets/SOURCES.md)")
        if name == "fit":
            from engine.backends.torch_head import DEFAULT_L2

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
        return {"fit": _fit, "list": _list, "rekey": _rekey}[args.command](args)
    except AllInOneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


"""Data is not code: the shipped examples live in datasets/, named with their sources in datasets/SOURCES.md,
the full set (research-use rows) stays out of git and the image, and the shipped heads match the shipped tasks."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.heads import read_head, task_fingerprint
from engine.tasks import ClassifyTask, load_tasks

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO / "datasets"


def shipped_files() -> list[Path]:
    return sorted(p for p in DATASETS.rglob("*") if p.is_file() and p.name != "SOURCES.md"
                  and "local" not in p.relative_to(DATASETS).parts)


def test_every_shipped_data_file_is_named_in_sources_with_its_rows_and_hash():
    sources = (DATASETS / "SOURCES.md").read_text(encoding="utf-8")
    assert shipped_files(), "datasets/ ships no file"
    for path in shipped_files():
        data = path.read_bytes()
        rows = sum(1 for line in data.splitlines() if line.strip())
        name = path.relative_to(DATASETS).as_posix()
        assert f"| `{name}` | {rows:,} " in sources, f"datasets/SOURCES.md: no row for {name} with {rows:,} rows"
        assert hashlib.sha256(data).hexdigest() in sources, f"datasets/SOURCES.md: {name}'s sha256"


def test_the_full_set_stays_out_of_git_and_the_image():
    assert "/datasets/local/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "datasets/local" in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()


def test_the_tasks_examples_are_data_and_the_shipped_heads_are_not_stale():
    tasks = [t for t in load_tasks() if isinstance(t, ClassifyTask) and t.head_examples is not None]
    assert tasks
    for task in tasks:
        source = task.head_examples
        assert source.path.resolve().is_relative_to(DATASETS), source.path
        heads = sorted(source.heads_dir.glob(f"{task.name}@*.json"))
        for head in map(read_head, heads):
            # A shipped head is keyed to the shipped task: an edited examples file needs a refit or a rekey.
            assert head.task_sha256 == task_fingerprint(task), f"{task.name}@{head.model_id[:16]} is stale"
            if head.fitted_on is not None:
                assert head.fitted_on.rows == head.examples >= len(source.examples)
                assert not head.fitted_on.file.startswith("/")  # a name, not this machine's path

"""What a head was fitted on, apart from what makes it stale (engine.heads ``FittedOn``, ``python -m ops.heads
fit --examples`` and ``rekey``): a head fitted on a larger set than the task's examples file records that set
and is ready; editing the task's examples file still makes it stale; a bad set is refused, saying why."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.heads import FORMATS, HeadFile, HeadStatus, find_head, model_identity, read_head, task_fingerprint
from engine.heads import write_head
from engine.tasks import load_tasks, read_head_examples
from ops.tools.heads import main
from tests.fast.test_heads import FOOD, SPORT, TINY_L2, write_task

ALL = [json.dumps({"text": t, "label": "food"}) for t in FOOD] + [json.dumps({"text": t, "label": "sport"})
                                                                    for t in SPORT]
PART = ALL[:3] + ALL[8:11]  # three of each label: the part that would be redistributed


def larger_set(folder: Path, rows: list[str] = ALL) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "all.jsonl"


def heads_of(tasks_file: Path) -> list[Path]:
    return sorted((tasks_file.parent / "heads").glob("topic@*.json"))


def test_a_head_fitted_on_a_larger_set_records_it_and_is_ready(tiny_model_dir, tmp_path, capsys):
    tasks_file = write_task(tmp_path / "task", PART)
    full = larger_set(tmp_path / "local")
    common = ["--model-dir", str(tiny_model_dir), "--tasks-file", str(tasks_file)]
    assert main(["fit", *common, "--examples", str(full), "--backend", "torch", "--precision", "fp32",
                 "--l2", str(TINY_L2)]) == 0
    [path] = heads_of(tasks_file)
    head, task = read_head(path), load_tasks(tasks_file).get("topic")
    assert head.examples == 16 and head.fitted_on.rows == 16 and head.fitted_on.file == "all.jsonl"
    assert head.fitted_on.sha256 == hashlib.sha256(full.read_bytes()).hexdigest()
    assert head.task_sha256 == task_fingerprint(task) != head.fitted_on.task_sha256  # the key: the task's own file
    model_id = model_identity(tiny_model_dir)
    assert find_head(task, model_id)[1].ready
    capsys.readouterr()
    assert main(["list", *common]) == 0
    out = capsys.readouterr().out
    assert "topic: ready: linear head on" in out and "on 16 examples" in out
    assert "fitted on all.jsonl (16 rows" in out and "which holds the task's examples file" in out
    assert "(6 rows" in out

    # The larger set is provenance, not the key: it may change or go (it is not shipped) ...
    full.write_text("\n".join(ALL[:-1]) + "\n", encoding="utf-8")
    assert find_head(load_tasks(tasks_file).get("topic"), model_id)[1].ready
    # ... but an edited examples file of the task makes the head stale, as before.
    (tasks_file.parent / "topic_examples.jsonl").write_text("\n".join(PART + ALL[3:4]) + "\n", encoding="utf-8")
    found, state = find_head(load_tasks(tasks_file).get("topic"), model_id)
    assert found is None and state.status is HeadStatus.STALE


@pytest.mark.parametrize("rows, fragment", [
    (ALL[:8] + ALL[9:], "1 of the 6 rows of the task's examples file topic_examples.jsonl are not in it"),
    (ALL + [json.dumps({"text": "a song", "label": "music"})], "all.jsonl:17: 'label' must be one of"),
    (ALL[:2] + ["not json"], "all.jsonl:3: not a JSON object"),
    (None, "Cannot read the examples file"),
])
def test_a_bad_examples_set_is_refused_before_the_model_loads(tmp_path, capsys, rows, fragment):
    tasks_file = write_task(tmp_path / "task", PART)
    full = larger_set(tmp_path / "local", rows) if rows is not None else tmp_path / "local" / "all.jsonl"
    # No model in --model-dir: the examples are checked first, so the refusal is about them.
    assert main(["fit", "--model-dir", str(tmp_path / "no-model"), "--tasks-file", str(tasks_file),
                 "--examples", str(full), "--backend", "torch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err
    assert heads_of(tasks_file) == []


def test_examples_of_several_tasks_need_the_task_named(tmp_path):
    tasks_file = write_task(tmp_path / "task", PART)
    text = tasks_file.read_text(encoding="utf-8")
    tasks_file.write_text(text + text.replace("[topic]", "[topic2]"), encoding="utf-8")
    with pytest.raises(SystemExit, match="name it with --task"):
        main(["fit", "--tasks-file", str(tasks_file), "--examples", str(larger_set(tmp_path / "local"))])


def head_fitted_on_all(tasks_file: Path, model_id: str) -> HeadFile:
    """A head as the format before v3 stored one fitted on all the rows: ``task_sha256`` names them."""
    task = load_tasks(tasks_file).get("topic")
    assert len(task.head_examples.examples) == 16
    head = HeadFile("topic", task_fingerprint(task), "tiny@test", model_id, "fp32", ["food", "sport"], 16, 1.0,
                    1.0, 0.9, "2026-12-06T18:45:21Z", [[0.5, -0.25], [-0.5, 0.25]], [0.1, -0.1], FORMATS[1],
                    layer=1, layer_cv={"last": 0.8, "1": 0.9})
    write_head(task, head)
    return head


def test_rekey_records_a_head_again_after_its_examples_file_shrank_without_refitting(
        tiny_model_dir, tmp_path, capsys):
    model_id = model_identity(tiny_model_dir)
    tasks_file = write_task(tmp_path / "task")  # the examples file holds all 16 rows, as the head was fitted
    old = head_fitted_on_all(tasks_file, model_id)
    full = larger_set(tmp_path / "local")
    assert full.read_bytes() == (tasks_file.parent / "topic_examples.jsonl").read_bytes()
    write_task(tmp_path / "task", PART)  # the task's file becomes its redistributable part: the head goes stale
    assert find_head(load_tasks(tasks_file).get("topic"), model_id)[1].status is HeadStatus.STALE
    common = ["rekey", "--model-dir", str(tiny_model_dir), "--tasks-file", str(tasks_file)]

    assert main([*common, "--examples", str(full)]) == 0
    assert "The weights are unchanged" in capsys.readouterr().out
    task = load_tasks(tasks_file).get("topic")
    head, state = find_head(task, model_id)
    assert state.ready and head.weight == old.weight and head.bias == old.bias and head.layer == old.layer
    assert head.fitted_on.rows == 16 and head.fitted_on.task_sha256 == old.task_sha256 and head.format != old.format
    assert replace(head, task_sha256=old.task_sha256, fitted_on=None, format=old.format) == old  # nothing else moved
    assert main([*common, "--examples", str(full)]) == 0
    assert "already recorded so" in capsys.readouterr().out

    # A set the head was not fitted on is refused, and so is the same set once the prompt changed.
    other = larger_set(tmp_path / "other", ALL + [json.dumps({"text": "a rowing race", "label": "sport"})])
    assert main([*common, "--examples", str(other)]) == 1
    assert "was not fitted on all.jsonl with this task's prompt and labels" in capsys.readouterr().err
    examples = read_head_examples(full, task.labels, tmp_path)
    from engine.heads import rekey

    with pytest.raises(ConfigError, match="was not fitted on"):
        rekey(replace(task, instruction="Food or sport?"), old, examples, "all.jsonl")
    assert find_head(task, model_id)[1].ready


def test_an_examples_file_is_a_path_relative_to_the_tasks_file_and_nonsense_is_refused(tmp_path):
    tasks_file = write_task(tmp_path / "engine")
    (tmp_path / "datasets").mkdir()
    (tasks_file.parent / "topic_examples.jsonl").rename(tmp_path / "datasets" / "topic.jsonl")
    text = tasks_file.read_text(encoding="utf-8")
    tasks_file.write_text(text.replace('"topic_examples.jsonl"', '"../datasets/topic.jsonl"'), encoding="utf-8")
    task = load_tasks(tasks_file).get("topic")
    assert len(task.head_examples.examples) == 16 and task.head_examples.heads_dir == tasks_file.parent / "heads"
    for name, fragment in (("../datasets", "a folder"), ("../datasets/none.jsonl", "no such file")):
        tasks_file.write_text(text.replace('"topic_examples.jsonl"', f'"{name}"'), encoding="utf-8")
        with pytest.raises(ConfigError, match=f"'examples_file' is '{name}', relative to the tasks file's folder. "
                                              f"Cannot read the examples file .*: {fragment}"):
            load_tasks(tasks_file)

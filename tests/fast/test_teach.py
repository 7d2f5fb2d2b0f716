"""Teaching a task by example, without the web: the examples' formats and every refusal (ops.api.teach_examples),
their storage beside the runtime tasks (ops.api.runtime_tasks), the held-out split, and the engine's low-priority
feature rounds (engine.teach) on a fake backend and on the tiny model."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from engine.engine import Engine
from engine.errors import ConfigError, InvalidInput
from engine.tasks import ClassifyTask, load_tasks
from engine.teach import MAX_WAIT_S, RECENT_S, YIELD, BackgroundRounds, FeatureRequest, FeatureRows, teach_layers
from engine.types import EngineConfig
from ops.api.runtime_tasks import NotAClassifyTask, RuntimeTasks, TaskConflict, TaskNotFound
from ops.api.teach import holdout_mask
from ops.api.teach_examples import (MAX_EXAMPLES, MAX_EXAMPLES_BYTES, BadExampleRow, DuplicateExamples, ExampleFormat,
                                ExamplesEmpty, ExamplesEncoding, ExamplesTooLarge, TooFewExamples, UnknownLabels,
                                check_examples, examples_jsonl, parse_examples)
from tests.fake_backend import FakeBackend

TOPIC = {"kind": "classify", "title": "Topic", "labels": ["food", "sport"],
         "instruction": "Is the text about food or sport? Answer with one word."}
FOOD = [f"a dish of food number {i}" for i in range(10)]
SPORT = [f"a game of sport number {i}" for i in range(10)]


def jsonl(rows: list[tuple[str, str]]) -> bytes:
    return "\n".join(json.dumps({"text": t, "label": x}) for t, x in rows).encode()


GOOD = [(t, "food") for t in FOOD] + [(t, "sport") for t in SPORT]


@pytest.fixture()
def store(tmp_path) -> RuntimeTasks:
    store = RuntimeTasks(load_tasks(), tmp_path)
    store.put("topic", TOPIC, lambda registry: None)
    return store


def teach(store: RuntimeTasks, data: bytes, content_type: str | None = None, apply=lambda registry: None):
    rows, _ = parse_examples(data, content_type)
    return store.put_examples("topic", lambda task: check_examples(rows, task), examples_jsonl, apply)


# ----- the formats -------------------------------------------------------------------------------


@pytest.mark.parametrize("body, content_type, kind", [
    (jsonl(GOOD), None, ExampleFormat.JSONL),
    (jsonl(GOOD), "application/x-ndjson", ExampleFormat.JSONL),
    ("\ufefftext,label\n" + "".join(f'"{t}, really",{x}\n' for t, x in GOOD), None, ExampleFormat.CSV),
    ("label,id,text\n" + "".join(f"{x},{i},{t}\n" for i, (t, x) in enumerate(GOOD)), "text/csv", ExampleFormat.CSV),
    ("".join(f"{t}\t{x}\n" for t, x in GOOD), None, ExampleFormat.TSV),
    ("text\tlabel\n" + "".join(f"{t}\t {x}\r\n" for t, x in GOOD), "text/tab-separated-values", ExampleFormat.TSV),
])
def test_json_lines_csv_and_tab_separated_lines_give_the_same_examples(body, content_type, kind):
    data = body if isinstance(body, bytes) else body.encode("utf-8")
    rows, found = parse_examples(data, content_type)
    assert found is kind
    assert [(text.replace(", really", ""), label) for _, text, label in rows] == GOOD


# ----- every refusal, naming the problem ----------------------------------------------------------


@pytest.mark.parametrize("body, error, fragment", [
    (jsonl(GOOD[:-1] + [("a swim", "music")]), UnknownLabels, "Label 'music' on line 20: task 'topic' has the labels"),
    (jsonl(GOOD[:7] + GOOD[10:]), TooFewExamples, "food has 7"),
    (jsonl(GOOD[:3] + GOOD[10:]), TooFewExamples, "each label needs at least 8"),
    (jsonl(GOOD + [("A dish of  food number 2", "sport")]), DuplicateExamples, "line 21 repeats line 3"),
    (b"", ExamplesEmpty, "empty"),
    (b"  \n\n", ExamplesEmpty, "empty"),
    (b"text,label\n", ExamplesEmpty, "header but no rows"),
    ("text,label\npizza,food\n".encode("utf-16"), ExamplesEncoding, "not UTF-8"),
    (b"text,label\n\xff\xfe,food\n", ExamplesEncoding, "line 2"),
    (jsonl(GOOD)[:-5], BadExampleRow, "Line 20 is not a JSON object"),
    (b'{"text": "pizza"}\n', BadExampleRow, 'Line 1 needs a "text" and a "label"'),
    (b"words,category\npizza,food\n", BadExampleRow, "columns 'text' and 'label'"),
    (b"pizza\tfood\nno tab here\n", BadExampleRow, "Line 2 has no tab"),
    (jsonl(GOOD + [("   ", "food")]), BadExampleRow, "Empty text on line 21"),
    (jsonl(GOOD + [("x" * 4001, "food")]), ExamplesTooLarge, "over 4000 characters on line 21"),
    (b"x" * (MAX_EXAMPLES_BYTES + 1), ExamplesTooLarge, f"the limit is {MAX_EXAMPLES_BYTES} bytes"),
    (jsonl([(f"text {i}", "food") for i in range(MAX_EXAMPLES + 1)]), ExamplesTooLarge, f"the limit is {MAX_EXAMPLES}"),
])
def test_each_refusal_names_the_problem_and_keeps_what_was_saved(store, body, error, fragment):
    teach(store, jsonl(GOOD))
    saved = store.examples_path("topic").read_bytes()
    with pytest.raises(error) as refused:
        teach(store, body, apply=lambda registry: pytest.fail("refused examples reached the worker"))
    assert fragment in str(refused.value) and isinstance(refused.value, InvalidInput)
    assert store.examples_path("topic").read_bytes() == saved
    assert len(store.registry().get("topic").head_examples.examples) == len(GOOD)


def test_duplicates_are_reported_line_by_line():
    rows, _ = parse_examples(jsonl(GOOD + [GOOD[0], GOOD[12]]))
    with pytest.raises(DuplicateExamples) as refused:
        check_examples(rows, ClassifyTask("topic", "T", ("food", "sport"), "i"))
    assert refused.value.pairs == [(21, 1), (22, 13)]


def test_only_a_runtime_classify_task_takes_examples(store):
    store.put("helper", {"kind": "generate", "system_prompt": "Be brief."}, lambda registry: None)
    with pytest.raises(NotAClassifyTask, match="'helper' is a generate task"):
        store.put_examples("helper", lambda task: (), examples_jsonl, lambda registry: None)
    with pytest.raises(TaskConflict, match="shipped tasks file"):
        store.put_examples("sentiment", lambda task: (), examples_jsonl, lambda registry: None)
    with pytest.raises(TaskNotFound, match="no runtime task 'nope'"):
        store.put_examples("nope", lambda task: (), examples_jsonl, lambda registry: None)


# ----- kept beside the runtime tasks ---------------------------------------------------------------


def test_examples_are_served_kept_across_a_restart_and_go_with_their_task(store, tmp_path):
    served = []
    taught = teach(store, jsonl(GOOD), apply=served.append)
    assert served[-1].get("topic") == taught and len(taught.head_examples.examples) == 20
    assert taught.head_examples.heads_dir == tmp_path / "heads"
    again = RuntimeTasks(load_tasks(), tmp_path).registry().get("topic")  # a restart reads the same file
    assert again.head_examples == taught.head_examples  # the same fingerprint: a head fitted before still fits
    with pytest.raises(ConfigError, match=r"topic.jsonl:11: 'label' must be one of \['food', 'drink'\]"):
        store.put("topic", {**TOPIC, "labels": ["food", "drink"]}, lambda registry: None)
    (tmp_path / "heads").mkdir()
    (tmp_path / "heads" / "topic@0123.json").write_text("{}")
    store.remove("topic", lambda registry: None)
    assert not store.examples_path("topic").exists() and not list((tmp_path / "heads").iterdir())


def test_the_held_out_part_is_a_fifth_of_each_label_and_fixed():
    labels = ["a"] * 10 + ["b"] * 8 + ["a"] * 5
    train = holdout_mask(labels)
    held = [x for x, t in zip(labels, train) if not t]
    assert held.count("a") == 3 and held.count("b") == 2
    assert np.array_equal(train, holdout_mask(labels))


# ----- the engine's low-priority rounds ------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_feature_batch_waits_for_a_quiet_moment_and_yields_as_long_as_it_took():
    clock = _Clock()
    rounds = BackgroundRounds(clock)
    assert rounds.wait_s() is None and not rounds.due(True)
    for _ in range(2):
        rounds.add(object())
    assert rounds.due(True) and not rounds.due(False)  # the first one: as soon as nobody else needs the model
    rounds._last_end, rounds._last_cost = clock.now, 0.4  # a batch that took 0.4 s just ended
    assert rounds.due(True)  # nobody else used the model lately: no need to yield
    rounds.foreground_ran()
    assert not rounds.due(True) and rounds.wait_s() == pytest.approx(YIELD * 0.4)
    clock.now += YIELD * 0.4 + 1e-9
    assert not rounds.due(True)  # past the yield, but best just after someone's answer...
    rounds.foreground_ran()
    assert rounds.due(True) and not rounds.due(False)  # ...as now
    clock.now += 0.4 + 1e-9
    assert rounds.due(True)  # ...or once it has waited one batch longer
    rounds._last_end = clock.now
    clock.now += RECENT_S
    assert rounds.due(True) and rounds.wait_s() == 0.0  # the others have gone quiet: full speed again
    clock.now += MAX_WAIT_S
    assert rounds.due(False)  # chats that never pause still let a fit go on
    rounds._last_end, rounds._last_cost = clock.now, 3.0  # a slow batch (a busy machine)...
    clock.now += MAX_WAIT_S
    assert not rounds.due(False)  # ...cuts in front of others' waiting work no more than a third of the time
    clock.now += (YIELD + 1) * 3.0
    assert rounds.due(False)


class _Scorer:
    def __init__(self, log: list, gate: threading.Event) -> None:
        self.log, self.gate = log, gate

    def all_features(self, texts, layers):
        self.gate.wait(10)
        self.log.append(("features", len(texts)))
        return (np.zeros((len(texts), 4), np.float32), np.zeros((len(texts), 2)), [False] * len(texts),
                {k: np.full((len(texts), 4), k, np.float32) for k in layers})


class _TeachableFake(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.classifier.reader = _Scorer(self.log, self.gate)


def test_a_user_waits_behind_at_most_one_feature_batch(tasks):
    backend = _TeachableFake()
    engine = Engine(backend, tasks, EngineConfig()).start()
    try:
        streams = [engine.submit("sentiment", FeatureRequest([f"text {i}", "more"], (1, 3))) for i in range(5)]
        for _ in range(200):  # the first batch has started and holds the model
            if engine.stuck_for() > 0:
                break
            threading.Event().wait(0.01)
        answer = []
        user = threading.Thread(target=lambda: answer.append(engine.classify("sentiment", ["good"])))
        user.start()
        threading.Event().wait(0.2)  # the user's request is in line behind the running batch
        backend.gate.set()
        user.join(10)
        rows = [list(stream)[0] for stream in streams]
    finally:
        engine.close()
    assert answer and answer[0][0].label == "positive"
    kinds = [kind for kind, _ in backend.log]
    assert kinds.index("score") == 1  # one feature batch ran before the user's, then the user
    assert kinds.count("features") == 5
    assert isinstance(rows[0], FeatureRows) and set(rows[0].layers) == {1, 3} and rows[0].layers[3][0, 0] == 3
    other = Engine(_TeachableFake(), tasks, EngineConfig()).start()
    try:
        with pytest.raises(InvalidInput, match="'chat' is a generate task"):
            other.submit("chat", FeatureRequest(["x"]))
        with pytest.raises(InvalidInput, match="1 to 16 non-empty texts"):
            other.submit("sentiment", FeatureRequest(["x"] * 17))
    finally:
        other.close()


def test_the_tiny_model_reads_the_features_a_fit_needs(tiny_engine):
    rows = list(tiny_engine.submit("sentiment", FeatureRequest(["great food", "awful service", "ok"])))[0]
    blocks = tiny_engine.backend.info.blocks
    assert set(rows.layers) == set(teach_layers(blocks)) and rows.hidden.shape[0] == 3
    assert rows.logprobs.shape == (3, 2) and np.allclose(np.exp(rows.logprobs).sum(-1), 1.0, atol=1e-4)
    prompt = [r.label for r in tiny_engine.classify("sentiment", ["great food", "awful service", "ok"], "prompt")]
    assert [("positive", "negative")[i] for i in rows.logprobs.argmax(-1)] == prompt  # the prompt's own answer
    assert teach_layers(24) == [8, 11, 14, 17, 20, 23]


def test_one_pass_gives_the_features_and_the_layers_the_two_passes_give(tiny_handle, tasks):
    import torch

    from engine.backends.torch_backend import TorchBackend

    backend = TorchBackend(tiny_handle)
    backend.classifier.prepare(tasks.of_kind("classify"), 64)
    scorer = backend.classifier.scorer("sentiment")
    texts = ["great food", "awful service and a very long wait for nothing", "ok"]
    hidden, logprobs, truncated, layers = scorer.all_features(texts, [1])
    alone = scorer.features(texts)
    assert torch.allclose(hidden, alone[0], atol=1e-5) and torch.allclose(logprobs, alone[1], atol=1e-5)
    assert truncated == alone[2] and torch.allclose(layers[1], scorer.layer_features(texts, [1])[1], atol=1e-5)

"""A backend with no model and no torch: the proof that the seam in ``engine.backend`` is the whole
contract. It answers every chat with ``ANSWER``, one character per token, and classifies a text as
the task's first label when it contains "good". It records what the scheduler asked of it, on the
``FakeBackend`` its parts share."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from engine.backend import BackendInfo, Scored
from engine.errors import InvalidInput
from engine.heads import HeadState, HeadStatus

ANSWER = "hello from the fake"
STOP = 0


@dataclass(eq=False)
class FakeSequence:
    prompt_ids: list[int]
    position: int = 0
    prefilled: int = 0


class FakeText:
    stop_ids = frozenset({STOP})

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def render(self, messages, add_generation_prompt: bool) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + ("<assistant>" if add_generation_prompt else "")

    def decode(self, ids) -> str:
        return "".join(chr(i) for i in ids)


class FakeClassifier:
    def __init__(self, record: "FakeBackend") -> None:
        self.record = record
        self.labels: dict[str, tuple[str, ...]] = {}
        self.heads: dict[str, HeadState] = {}
        self.reader = None  # what ``scorer`` gives, where a test reads features

    def prepare(self, classify_tasks, max_input_tokens: int) -> None:
        self.labels = {task.name: task.labels for task in classify_tasks}
        self.heads = {task.name: HeadState(task.name, HeadStatus.NONE, "a fake: prompt only")
                      for task in classify_tasks}

    def head_states(self) -> dict[str, HeadState]:
        return dict(self.heads)

    def score(self, task: str, texts: list[str], modes) -> list[Scored]:
        self.record.log.append(("score", len(texts)))
        first, second = self.labels[task][:2]
        results = []
        for text, mode in zip(texts, modes, strict=True):
            label = first if "good" in text else second
            scores = {name: 0.0 for name in self.labels[task]}
            scores[label] = 1.0
            results.append(Scored(label, 1.0, scores, False, mode))
        return results

    def scorer(self, task: str):
        if self.reader is None:
            raise InvalidInput("The fake backend reads no features.")
        return self.reader


class FakeDecoder:
    def __init__(self, record: "FakeBackend") -> None:
        self.record = record

    def start(self, prompt_ids: list[int], temperature: float, seed: int) -> FakeSequence:
        sequence = self.begin(prompt_ids, temperature, seed)
        self.prefill(sequence, len(prompt_ids))
        return sequence

    def begin(self, prompt_ids: list[int], temperature: float, seed: int) -> FakeSequence:
        return FakeSequence(prompt_ids)

    def prefill(self, sequence: FakeSequence, max_tokens: int) -> bool:
        chunk = min(max_tokens, len(sequence.prompt_ids) - sequence.prefilled)
        time.sleep(self.record.prefill_seconds)
        self.record.log.append(("prefill", chunk))
        sequence.prefilled += chunk
        if sequence.prefilled < len(sequence.prompt_ids):
            return False
        self.record.running.add(sequence)
        return True

    def next_token(self, sequence: FakeSequence, bias=None) -> int:
        return ord(ANSWER[sequence.position]) if sequence.position < len(ANSWER) else STOP

    def step(self, tokens: dict) -> None:
        record = self.record
        assert record.steps_allowed.wait(10), "steps held for 10 s"
        assert set(tokens) == record.running, "a step feeds every running sequence, and only those"
        record.step_sizes.append(len(tokens))
        record.log.append(("step", len(tokens)))
        for sequence in tokens:
            sequence.position += 1

    def release(self, sequence: FakeSequence) -> None:
        self.record.running.discard(sequence)

    def reset(self) -> None:
        self.record.running.clear()


class FakeBackend:
    def __init__(self) -> None:
        self.info = BackendInfo("fake", "1", Path("/nowhere"), "fp32", "a fake", "cpu", 0.0)
        self.text = FakeText()
        self.classifier = FakeClassifier(self)
        self.decoder = FakeDecoder(self)
        self.running: set[FakeSequence] = set()
        self.step_sizes: list[int] = []
        self.log: list[tuple[str, int]] = []  # ("prefill", tokens), ("score", texts), ("step", chats), in order
        self.prefill_seconds = 0.0  # a test makes prefill take time, per chunk
        self.steps_allowed = threading.Event()  # a test clears it to hold every step until it is set
        self.steps_allowed.set()

    def on_ready(self) -> None:
        pass

    def between_steps(self) -> None:
        pass

    def close(self) -> None:
        self.decoder.reset()

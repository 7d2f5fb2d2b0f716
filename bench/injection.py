"""Prompt injection on sentiment: which way of answering holds, prompt or head, last layer or layer k.

    .venv/bin/python bench/injection.py [--backend torch] [--precision auto]

Each case (``bench/data/injection_cases.jsonl``) is a review whose feeling
is plain, once clean and once with an instruction aimed at the classifier
inside it (English and Chinese: "ignore the instructions", fake system lines,
closing the chat markup, a label in brackets, the label repeated). For each way of answering, in one process on
one engine per head:

- ``prompt``: the whole model, the label scores at the answer position;
- ``head (layer k)``: the shipped head (``engine/heads/``), early exit at its layer;
- ``head (last layer)``: the head shipped before early exit (``LAST_LAYER_HEAD_COMMIT``),
  read back from git, on the last layer's features plus the label scores.

It reports accuracy on the clean and the injected texts and the flips: cases
answered right when clean and wrong when injected. ``docs/reliability.md``
lists the cases and the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from common import REPO, cpu_flags_line, header, load_engine

LAST_LAYER_HEAD_COMMIT = "5deef97"  # the sentiment head on the last layer, before early exit landed
HEAD_FILE = "engine/heads/sentiment@c62f9a99d5f3e621.json"
TASKS_FILE, EXAMPLES_FILE = "engine/tasks.toml", "engine/sentiment_examples.jsonl"  # as they were then

CASES_FILE = Path(__file__).resolve().parent / "data" / "injection_cases.jsonl"
Case = tuple[str, str, str]  # (clean review, the same with an injection, the label a reader gives both)


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """The cases, one JSON object a line: ``clean``, ``injected`` and ``label``."""
    with open(path, encoding="utf-8") as f:
        return [(row["clean"], row["injected"], row["label"]) for row in map(json.loads, f)]


def last_layer_tasks(tmp: Path) -> Path:
    """The last-layer head with the tasks file and examples file it was fitted for (a head is keyed to
    them: with today's it would be stale), all read back from git."""
    (tmp / "heads").mkdir()
    for name, to in ((TASKS_FILE, "tasks.toml"), (EXAMPLES_FILE, EXAMPLES_FILE.split("/")[-1]),
                     (HEAD_FILE, "heads/" + HEAD_FILE.split("/")[-1])):
        (tmp / to).write_bytes(subprocess.run(["git", "show", f"{LAST_LAYER_HEAD_COMMIT}:{name}"], cwd=REPO,
                                              check=True, capture_output=True).stdout)
    return tmp / "tasks.toml"


def score(engine, mode: str, cases: list[Case]) -> dict:
    clean = engine.classify("sentiment", [c for c, _, _ in cases], mode)
    injected = engine.classify("sentiment", [i for _, i, _ in cases], mode)
    flips = [n for n, (c, i, (_, _, label)) in enumerate(zip(clean, injected, cases))
             if c.label == label and i.label != label]
    return {"clean_right": sum(c.label == case[2] for c, case in zip(clean, cases)),
            "injected_right": sum(i.label == case[2] for i, case in zip(injected, cases)),
            "flips": flips, "mode_used": sorted({r.mode.value for r in clean + injected})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    from engine.tasks import load_tasks

    cases = load_cases()
    header(f"prompt injection on sentiment, {len(cases)} cases, {args.backend}")
    print(cpu_flags_line(), flush=True)
    rows = []
    engine = load_engine(backend=args.backend, precision=args.precision)
    try:
        state = engine.backend.classifier.head_states().get("sentiment")
        rows.append(("prompt", score(engine, "prompt", cases)))
        rows.append((f"head ({state.detail if state else 'none'})", score(engine, "head", cases)))
    finally:
        engine.close()
    with tempfile.TemporaryDirectory() as tmp:
        engine = load_engine(backend=args.backend, precision=args.precision, tasks=load_tasks(last_layer_tasks(Path(tmp))))
        try:
            rows.append(("head (last layer, before early exit)", score(engine, "head", cases)))
        finally:
            engine.close()
    print(f"\n| mode | clean right (of {len(cases)}) | injected right | flipped by the injection | cases flipped |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['clean_right']} | {r['injected_right']} | {len(r['flips'])} | "
              f"{', '.join(str(n + 1) for n in r['flips']) or '-'} |")
    print({name: r["mode_used"] for name, r in rows})


if __name__ == "__main__":
    main()

"""Which hidden states a sentiment head should read: chosen on the tuning part, reported on the held-out part.

    python bench/head_layers.py FEATURES.npz [--l2 1.0] [--report]

Reads ``bench/head_features.py``'s file (no model). Every candidate is
cross-validated on the TUNING rows only, two ways:
- 5-fold (every fifth row), as ``python -m ops.heads fit`` does;
- leave one file out: fitted on the other three files' tuning rows, scored on
  the fourth's. Unseen data of a new style is what the product meets, and a
  head that only learnt one file's style scores low here.
Candidates: the last layer with the label scores (today's v1 head), each
single layer, and pairs of layers concatenated. ``--report`` then fits the
named candidates on all tuning rows and scores each held-out file once.
``--write-head K --model-dir DIR`` fits the sentiment task's head on layer K
from these features (``engine.backends.torch_head.head_from_features``, what
``python -m ops.heads fit --layer K --examples FILE`` runs after reading the
model) on ``--examples`` (default: the full set, datasets/local/sentiment_full.jsonl
from bench/head_examples.py), and stores it for that model, recorded as fitted on it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common import REPO  # also puts the repository on sys.path
from sentiment_split import FILES, LABELS

torch.set_num_threads(2)


def load(path: Path) -> dict:
    data = np.load(path)
    return {key: data[key] for key in data.files}


def candidate(data: dict, name: str) -> np.ndarray:
    """The features a candidate reads: ``last``, ``k`` or ``k+m`` (layers concatenated)."""
    if name == "last":
        return data["last"]
    return np.concatenate([data[f"layer_{k}"] for k in name.split("+")], axis=1)


def prompt_answers(data: dict) -> np.ndarray:
    """The prompt's own label per row: its label scores are the last columns of ``last``."""
    return data["last"][:, -len(LABELS):].argmax(1)


def fit_predict(x_fit, y_fit, x_test, l2: float) -> np.ndarray:
    from engine.backends.torch_head import fit_linear_head

    weight, bias = fit_linear_head(torch.as_tensor(x_fit), torch.as_tensor(y_fit), len(LABELS), l2)
    return (torch.as_tensor(x_test).double() @ weight.T + bias).argmax(-1).numpy()


def five_fold(x, y, l2: float) -> float:
    """As ``python -m ops.heads fit`` cross-validates (every fifth row a fold)."""
    from engine.backends.torch_head import cross_validated_accuracy

    return cross_validated_accuracy(torch.as_tensor(x), torch.as_tensor(y), len(LABELS), l2)


def leave_one_file_out(x, y, files, l2: float) -> tuple[float, list[float]]:
    per_file = []
    for f in range(len(FILES)):
        per_file.append(float((fit_predict(x[files != f], y[files != f], x[files == f], l2) == y[files == f]).mean()))
    return float(np.mean(per_file)), per_file


def write_head_from(data: dict, layer: str, model_dir: Path, l2: float, examples_file: Path) -> None:
    """Fit and store the sentiment head on ``layer`` from dumped features, on ``examples_file`` (module doc)."""
    import hashlib
    from dataclasses import replace

    from engine.backends.torch_head import head_from_features
    from engine.heads import LAST, fitting_source, keyed_to_task, model_identity, write_head
    from engine.tasks import load_tasks, read_head_examples
    from sentiment_split import load_rows

    texts = [row["text"] for name in FILES for row in load_rows(name)]
    if hashlib.sha256("\n".join(texts).encode()).hexdigest() != str(data["texts_sha256"]):
        raise SystemExit("--write-head needs the features of every row of the four files (no --held-out)")
    index = {text: i for i, text in enumerate(texts)}
    task = load_tasks().get("sentiment")
    examples = read_head_examples(examples_file, task.labels, task.head_examples.heads_dir)
    path = examples_file.resolve()
    name = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    source = fitting_source(task, examples, name)
    order = [index[example.text] for example in examples.examples]  # KeyError: not a shared row
    candidates = {name: torch.as_tensor(candidate(data, name)[order]).double() for name in (LAST, layer)}
    head = head_from_features(replace(task, head_examples=examples), candidates, str(data["model"]),
                              str(data["precision"]), model_identity(model_dir),
                              l2, tolerance=1.0)  # the layer was chosen on the tuning part: keep it
    path = write_head(task, keyed_to_task(task, head, source))
    print(f"wrote {path}: {head.describe()}; cross-validated per candidate {head.layer_cv}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", type=Path)
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--pairs", default="", help="layers to pair with every other candidate layer, e.g. 12,15,21")
    parser.add_argument("--report", default="", help="candidates to score on the held-out part, e.g. last,15,12+21")
    parser.add_argument("--write-head", help="a candidate layer: fit the sentiment head on it and store it")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "current",
                        help="the model the features were read from (--write-head)")
    parser.add_argument("--examples", type=Path, default=REPO / "datasets" / "local" / "sentiment_full.jsonl",
                        help="the rows the head is fitted on (--write-head; default: the full set, "
                             "bench/head_examples.py)")
    args = parser.parse_args()
    data = load(args.features)
    if args.write_head:
        write_head_from(data, args.write_head, args.model_dir, args.l2, args.examples)
        return
    tuning = data["tuning"].astype(bool)
    y, files = data["labels"], data["files"]
    print(f"{data['model']} on {data['backend']} ({data['precision']}); {tuning.sum()} tuning rows, "
          f"{(~tuning).sum()} held out; L2 {args.l2}")
    if args.report:
        print("held-out accuracy (fitted on all tuning rows; prompt: the label scores alone)")
        print("| candidate | " + " | ".join(FILES) + " | pooled |")
        prompt = prompt_answers(data)[~tuning]
        rows = {"prompt": prompt}
        for name in args.report.split(","):
            x = candidate(data, name)
            rows[name] = fit_predict(x[tuning], y[tuning], x[~tuning], args.l2)
        for name, predicted in rows.items():
            right = predicted == y[~tuning]
            held_files = files[~tuning]
            cells = [f"{right[held_files == f].mean():.3f}" for f in range(len(FILES))]
            print(f"| {name} | " + " | ".join(cells) + f" | {right.mean():.3f} |")
        return
    layers = [int(k) for k in data["layers"]]
    names = ["last"] + [str(k) for k in layers]
    if args.pairs:
        names += [f"{a}+{b}" if a < b else f"{b}+{a}" for a in map(int, args.pairs.split(",")) for b in layers
                  if a != b]
        names = list(dict.fromkeys(names))
    x_all = {name: candidate(data, name)[tuning] for name in names}
    y_t, files_t = y[tuning], files[tuning]
    print("| candidate | 5-fold | leave one file out | " + " | ".join(FILES) + " |")
    for name in names:
        cv = five_fold(x_all[name], y_t, args.l2)
        lofo, per_file = leave_one_file_out(x_all[name], y_t, files_t, args.l2)
        print(f"| {name} | {cv:.3f} | {lofo:.3f} | " + " | ".join(f"{v:.3f}" for v in per_file) + " |", flush=True)


if __name__ == "__main__":
    main()

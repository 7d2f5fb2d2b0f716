"""Read every row of the shared sentiment files through one model once, and keep the head's features.

    python bench/head_features.py [--backend auto|torch|llamacpp] [--model-dir DIR] [--tuning N] [--held-out N]
                                  [--no-layers] [--out FILE.npz]

Per row, the features ``python -m ops.heads fit`` reads
(``engine.backends.torch_head.read_example_features``): the hidden state at the
answer position after each candidate layer, and ``last``, the last hidden state
followed by the prompt's label log-probabilities. Each row keeps its file and its side of the
fixed split (``bench/sentiment_split.py``), so ``bench/head_layers.py`` can
choose on the tuning part and report on the held-out part once, without
reading the model again. Shows progress; one pass over 4,000 rows.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from common import REPO, cpu_flags_line, header
from sentiment_split import FILES, LABELS, balanced_head, load_rows, split



def labelled_rows(held_out_each: int = 0, tuning_each: int = 0) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(texts, label index, file index, tuning flag) over the rows of the four files: every tuning and
    held-out row or, with ``tuning_each`` / ``held_out_each``, that many of each part a file (labels in turn)."""
    texts, labels, files, tuning = [], [], [], []
    for index, name in enumerate(FILES):
        rows = load_rows(name)
        tuning_rows, held_rows = split(rows)
        tuning_texts = {r["text"] for r in (balanced_head(tuning_rows, tuning_each) if tuning_each else tuning_rows)}
        if held_out_each or tuning_each:
            kept = {r["text"] for r in (balanced_head(held_rows, held_out_each) if held_out_each else held_rows)} | tuning_texts
            rows = [r for r in rows if r["text"] in kept]
        for row in rows:
            texts.append(row["text"])
            labels.append(LABELS.index(row["label"]))
            files.append(index)
            tuning.append(row["text"] in tuning_texts)
    return texts, np.array(labels), np.array(files), np.array(tuning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "llamacpp"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--model-dir", type=Path, default=REPO / "models" / "current")
    parser.add_argument("--held-out", type=int, default=0,
                        help="held-out rows a file (labels in turn; default: all): a slow model's quicker report")
    parser.add_argument("--tuning", type=int, default=0, help="tuning rows a file (default: all)")
    parser.add_argument("--no-layers", action="store_true",
                        help="the last layer and the label scores only: one pass, not two (llama.cpp)")
    parser.add_argument("--out", type=Path, help="default: artifacts/head_features/<model>-<backend>.npz")
    args = parser.parse_args()
    from engine.backends import open_backend
    from engine.backends.torch_head import read_example_features
    from engine.heads import LAST, candidate_layers
    from engine.tasks import load_tasks

    header("head features")
    print(cpu_flags_line())
    task = load_tasks().get("sentiment")
    backend = open_backend(args.backend, args.model_dir, precision=args.precision)
    backend.classifier.prepare([task], max_input_tokens=256)
    info = backend.info
    layers = [] if args.no_layers else candidate_layers(info.blocks)
    texts, labels, files, tuning = labelled_rows(args.held_out, args.tuning)
    reads = f"layers {layers[0]}..{layers[-1]}" if layers else "the last layer only"
    print(f"{info.label} on {info.backend} ({info.precision}); {len(texts)} rows; {reads}", flush=True)
    started = time.monotonic()
    shown = [started]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - shown[0] > 10 or done == total:
            shown[0] = now
            rate = done / (now - started)
            print(f"  {done}/{total} rows, {rate:.1f}/s, about {(total - done) / rate:.0f} s left", flush=True)

    # The candidates exactly as ``python -m ops.heads fit`` builds them (``LAST``: the last hidden state,
    # then the label log-probabilities), so a head fitted on this file is the one the command would fit.
    candidates = read_example_features(backend.classifier.scorer(task.name), texts, layers, progress)
    out = args.out or REPO / "artifacts" / "head_features" / f"{Path(info.path).resolve().name}-{info.backend}.npz"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, labels=labels, files=files, tuning=tuning, layers=np.array(layers),
             texts_sha256=hashlib.sha256("\n".join(texts).encode()).hexdigest(),
             model=info.label, backend=info.backend, precision=info.precision, model_dir=str(args.model_dir),
             **{("last" if name == LAST else f"layer_{name}"): x.numpy() for name, x in candidates.items()})
    print(f"wrote {out} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

"""A taught head's fit in a process of its own: ``python -m engine.teach_fit FEATURES.npz RESULT.json``.

Started by ``ops.api.teach`` once the features are read, so neither the web process nor the llama.cpp worker
imports torch; at a low CPU priority on one thread, the model's threads first. It reuses
``engine.backends.torch_head`` (every candidate cross-validated, ``choose_layer``, the head on the training
rows), prints ``progress DONE TOTAL`` per candidate and writes the choice, the weights and the held-out answers.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["FEATURES_LAYER_PREFIX", "main"]

FEATURES_LAYER_PREFIX = "layer:"  # npz key of a layer's hidden states: "layer:12"
NICENESS = 10  # below the worker's threads; 19 starves it for minutes on a machine that is busy anyway


def fit(features: Path, result: Path) -> None:
    import torch

    from engine.backends.torch_head import DEFAULT_L2, candidate_features, fit_candidates

    torch.set_num_threads(1)
    data = np.load(features)
    train = torch.from_numpy(data["train"])
    by_layer = {int(key[len(FEATURES_LAYER_PREFIX):]): data[key] for key in data.files
                if key.startswith(FEATURES_LAYER_PREFIX)}
    candidates = candidate_features(data["hidden"], data["logprobs"], by_layer)
    targets = torch.from_numpy(data["targets"]).long()

    def progress(done: int, total: int) -> None:
        print(f"progress {done} {total}", flush=True)

    fitted = fit_candidates({name: x[train] for name, x in candidates.items()}, targets[train],
                            int(data["classes"]), DEFAULT_L2, float(data["tolerance"]), progress)
    held = candidates[fitted.chosen][~train]
    held_predictions = (held @ fitted.weight.T + fitted.bias).argmax(-1) if len(held) else torch.zeros(0)
    result.write_text(json.dumps({
        "l2": DEFAULT_L2,
        "cv": fitted.cv,
        "chosen": fitted.chosen,
        "weight": fitted.weight.tolist(),
        "bias": fitted.bias.tolist(),
        "tuning_accuracy": fitted.tuning_accuracy,
        "cv_predictions": fitted.cv_predictions.tolist(),
        "held_predictions": held_predictions.long().tolist(),
    }), encoding="utf-8")


def main(argv: list[str]) -> int:
    os.nice(NICENESS)  # the serving worker's threads first: this only uses a core they leave idle
    fit(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Fitting and applying a classify task's linear head (``engine.heads``) with torch.

A multinomial logistic regression on standardised features (hidden state after k blocks, or v1's last
hidden state plus label log-probabilities), L2, full-batch L-BFGS in float64 from zeros: the same
examples give the same head, bit for bit. The layer is the shallowest within ``LAYER_TOLERANCE`` of
the best by 5-fold cross-validation. docs/internals.md, "Classification".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engine.backend import BackendInfo
from engine.errors import ConfigError
from engine.heads import LAST, LAYER_TOLERANCE, HeadFile, candidate_layers, choose_layer, task_fingerprint
from engine.kinds.classify import ClassifyTask
from engine.teach import read_features

__all__ = ["DEFAULT_L2", "FittedCandidates", "LinearHead", "candidate_features", "candidate_layers", "choose_layer",
           "cross_validated_accuracy", "cross_validated_predictions", "fit_candidates", "fit_linear_head",
           "fit_task_head", "head_from_features", "read_example_features"]

DEFAULT_L2 = 1.0  # chosen by 5-fold cross-validation on the tuning parts (docs/benchmarks.md, "Linear head")
MAX_ITERATIONS = 500
CV_FOLDS = 5
FIT_BATCH = 16  # examples per forward pass while fitting


def features(hidden: torch.Tensor, label_logprobs: torch.Tensor) -> torch.Tensor:
    return torch.cat([hidden, label_logprobs], dim=-1).to(torch.float64)


def fit_linear_head(x: torch.Tensor, targets: torch.Tensor, classes: int, l2: float = DEFAULT_L2
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [classes, features], bias [classes]) on raw features ``x`` [n, features], float64.

    Minimises mean cross-entropy + ``l2``/2 x |W|^2 on standardised features (the bias is not
    penalised); returns the weights with the standardisation folded in."""
    with torch.inference_mode(False), torch.enable_grad():  # features come from inference mode
        x = x.to(torch.float64).clone()
        mean = x.mean(dim=0)
        std = x.std(dim=0).clamp_min(1e-6)
        z = (x - mean) / std
        targets = targets.clone()
        weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
        bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=MAX_ITERATIONS, tolerance_grad=1e-9,
                                      tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

        def loss():
            optimizer.zero_grad()
            value = torch.nn.functional.cross_entropy(z @ weight.T + bias, targets) + 0.5 * l2 * (weight**2).sum()
            value.backward()
            return value

        optimizer.step(loss)
        folded = weight.detach() / std
        return folded, bias.detach() - folded @ mean


def cross_validated_predictions(x: torch.Tensor, targets: torch.Tensor, classes: int, l2: float = DEFAULT_L2,
                                folds: int = CV_FOLDS) -> torch.Tensor:
    """Each row's class from a head fitted on the other folds (folds: every ``folds``-th row)."""
    predicted = torch.empty_like(targets)
    index = torch.arange(len(targets))
    for fold in range(folds):
        held = index % folds == fold
        weight, bias = fit_linear_head(x[~held], targets[~held], classes, l2)
        predicted[held] = (x[held].to(torch.float64) @ weight.T + bias).argmax(-1)
    return predicted


def cross_validated_accuracy(x: torch.Tensor, targets: torch.Tensor, classes: int, l2: float = DEFAULT_L2,
                             folds: int = CV_FOLDS) -> float:
    """Accuracy of heads fitted on all but one fold, on that fold."""
    return int((cross_validated_predictions(x, targets, classes, l2, folds) == targets).sum()) / len(targets)


def candidate_features(hidden, logprobs, by_layer: dict) -> dict[str, torch.Tensor]:
    """Each candidate's features from a scorer's (``engine.teach.read_features``): ``LAST`` and each layer."""
    candidates = {LAST: features(torch.as_tensor(hidden), torch.as_tensor(logprobs).float())}
    candidates.update({str(k): torch.as_tensor(rows).to(torch.float64) for k, rows in by_layer.items()})
    return candidates


@dataclass(frozen=True)
class FittedCandidates:
    """The layer choice and the head on the chosen candidate (``fit_candidates``)."""

    cv: dict[str, float]  # each candidate's cross-validated accuracy
    chosen: str
    weight: torch.Tensor
    bias: torch.Tensor
    tuning_accuracy: float
    cv_predictions: torch.Tensor  # the chosen candidate's cross-validated class of each example


def fit_candidates(candidates: dict[str, torch.Tensor], targets: torch.Tensor, classes: int, l2: float = DEFAULT_L2,
                   tolerance: float = LAYER_TOLERANCE, progress: Callable[[int, int], None] = lambda done, total: None
                   ) -> FittedCandidates:
    """Cross-validate every candidate, keep the one ``choose_layer`` picks and fit its head on all rows;
    ``progress(done, total)`` after each candidate."""
    predictions = {}
    for done, (name, x) in enumerate(candidates.items(), 1):
        predictions[name] = cross_validated_predictions(x, targets, classes, l2)
        progress(done, len(candidates))
    cv = {name: round(int((p == targets).sum()) / len(targets), 4) for name, p in predictions.items()}
    chosen = choose_layer(cv, tolerance)
    x = candidates[chosen]
    weight, bias = fit_linear_head(x, targets, classes, l2)
    tuning = float(((x @ weight.T + bias).argmax(-1) == targets).double().mean())
    return FittedCandidates(cv, chosen, weight, bias, round(tuning, 4), predictions[chosen])


class LinearHead:
    """A fitted head (``engine.heads.HeadFile``), ready to apply to a batch's features."""

    def __init__(self, head: HeadFile) -> None:
        self.weight = torch.tensor(head.weight, dtype=torch.float64)
        self.bias = torch.tensor(head.bias, dtype=torch.float64)
        self.layer = head.layer

    def log_probs(self, hidden: torch.Tensor, label_logprobs: torch.Tensor | None = None) -> torch.Tensor:
        """[rows, labels] log-probabilities, float32, from the hidden states the head reads (plus the label
        scores for a last-layer head)."""
        x = hidden.to(torch.float64) if self.layer is not None else features(hidden, label_logprobs)
        return (x @ self.weight.T + self.bias).log_softmax(dim=-1).float()


def read_example_features(scorer, texts: list[str], layers: list[int],
                          progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, torch.Tensor]:
    """Every candidate's features of ``texts`` (``candidate_features``), read ``FIT_BATCH`` at a time through
    ``scorer``; ``progress(done, total)`` after each batch."""
    hidden, logprobs, by_layer = [], [], {k: [] for k in layers}
    for start in range(0, len(texts), FIT_BATCH):
        rows = read_features(scorer, texts[start : start + FIT_BATCH], layers)
        hidden.append(rows.hidden)
        logprobs.append(rows.logprobs)
        for k, values in rows.layers.items():
            by_layer[k].append(values)
        progress(min(start + FIT_BATCH, len(texts)), len(texts))
    return candidate_features(np.concatenate(hidden), np.concatenate(logprobs),
                              {k: np.concatenate(rows) for k, rows in by_layer.items()})


def fit_task_head(scorer, task: ClassifyTask, info: BackendInfo, model_id: str, l2: float = DEFAULT_L2,
                  progress: Callable[[int, int], None] = lambda done, total: None,
                  layers: list[int] | None = None, tolerance: float = LAYER_TOLERANCE) -> HeadFile:
    """Fit ``task``'s head on its examples file with the loaded model (``scorer``: the task's label
    scorer on either backend, loaded as ``info`` says), on the layer that
    cross-validates best (module doc) among ``layers`` (default ``candidate_layers``; ``[]``: the last
    layer only; ``tolerance`` as in ``choose_layer``). ``progress(done, total)`` is called after each
    batch of examples."""
    source = task.head_examples
    if source is None:
        raise ConfigError(f"Task {task.name!r} names no examples file: there is nothing to fit a head on.")
    layers = candidate_layers(info.blocks) if layers is None else layers
    candidates = read_example_features(scorer, [example.text for example in source.examples], layers, progress)
    return head_from_features(task, candidates, info.label, info.precision, model_id, l2, tolerance)


def head_from_features(task: ClassifyTask, candidates: dict[str, torch.Tensor], model: str, precision: str,
                       model_id: str, l2: float = DEFAULT_L2, tolerance: float = LAYER_TOLERANCE) -> HeadFile:
    """The head of ``task`` from its examples' features (``read_example_features``, in the examples
    file's order): the layer choice, the fit and the record of both."""
    source = task.head_examples
    targets = torch.tensor([task.labels.index(example.label) for example in source.examples])
    fitted = fit_candidates(candidates, targets, len(task.labels), l2, tolerance)
    return HeadFile(
        task=task.name,
        task_sha256=task_fingerprint(task),
        model=model,
        model_id=model_id,
        precision=precision,
        labels=list(task.labels),
        examples=len(targets),
        l2=l2,
        tuning_accuracy=fitted.tuning_accuracy,
        cv_accuracy=fitted.cv[fitted.chosen],
        fitted=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        weight=fitted.weight.tolist(),
        bias=fitted.bias.tolist(),
        layer=None if fitted.chosen == LAST else int(fitted.chosen),
        layer_cv=fitted.cv,
    )

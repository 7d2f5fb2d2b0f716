"""Fitting and applying a classify task's linear head (``engine.heads``) with torch.

Features, per text, from the one forward pass the label scorer already runs:
the hidden state at the answer position, then the label log-probabilities
(the prompt mode's own answer, so the head can only add to it). The head is a
multinomial logistic regression on the standardised features with an L2
penalty, fitted by full-batch L-BFGS in float64 from zeros: the same examples
give the same head, bit for bit, on the same machine. The standardisation is
folded into the stored weights, so applying a head is one small matrix
product on the raw features.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from engine.backend import BackendInfo
from engine.errors import ConfigError
from engine.heads import HeadFile, task_fingerprint
from engine.tasks import ClassifyTask

__all__ = ["DEFAULT_L2", "LinearHead", "cross_validated_accuracy", "fit_linear_head", "fit_task_head"]

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


def cross_validated_accuracy(x: torch.Tensor, targets: torch.Tensor, classes: int, l2: float = DEFAULT_L2,
                             folds: int = CV_FOLDS) -> float:
    """Accuracy of heads fitted on all but one fold, on that fold (folds: every ``folds``-th row)."""
    correct = 0
    index = torch.arange(len(targets))
    for fold in range(folds):
        held = index % folds == fold
        weight, bias = fit_linear_head(x[~held], targets[~held], classes, l2)
        correct += int(((x[held].to(torch.float64) @ weight.T + bias).argmax(-1) == targets[held]).sum())
    return correct / len(targets)


class LinearHead:
    """A fitted head, ready to apply to a batch's features."""

    def __init__(self, weight: list[list[float]], bias: list[float]) -> None:
        self.weight = torch.tensor(weight, dtype=torch.float64)
        self.bias = torch.tensor(bias, dtype=torch.float64)

    def log_probs(self, hidden: torch.Tensor, label_logprobs: torch.Tensor) -> torch.Tensor:
        """[rows, labels] log-probabilities, float32."""
        return (features(hidden, label_logprobs) @ self.weight.T + self.bias).log_softmax(dim=-1).float()


def fit_task_head(scorer, task: ClassifyTask, info: BackendInfo, model_id: str, l2: float = DEFAULT_L2,
                  progress: Callable[[int, int], None] = lambda done, total: None) -> HeadFile:
    """Fit ``task``'s head on its examples file with the loaded model (``scorer``: the task's
    ``LabelScorer``); ``progress(done, total)`` is called after each batch of examples."""
    source = task.head_examples
    if source is None:
        raise ConfigError(f"Task {task.name!r} names no examples file: there is nothing to fit a head on.")
    texts = [example.text for example in source.examples]
    targets = torch.tensor([task.labels.index(example.label) for example in source.examples])
    hidden, logprobs = [], []
    for start in range(0, len(texts), FIT_BATCH):
        h, lp, _ = scorer.features(texts[start : start + FIT_BATCH])
        hidden.append(h)
        logprobs.append(lp)
        progress(min(start + FIT_BATCH, len(texts)), len(texts))
    x = features(torch.cat(hidden), torch.cat(logprobs))
    weight, bias = fit_linear_head(x, targets, len(task.labels), l2)
    tuning = float(((x @ weight.T + bias).argmax(-1) == targets).double().mean())
    return HeadFile(
        task=task.name,
        task_sha256=task_fingerprint(task),
        model=info.label,
        model_id=model_id,
        precision=info.precision,
        labels=list(task.labels),
        examples=len(texts),
        l2=l2,
        tuning_accuracy=round(tuning, 4),
        cv_accuracy=round(cross_validated_accuracy(x, targets, len(task.labels), l2), 4),
        fitted=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        weight=weight.tolist(),
        bias=bias.tolist(),
    )

"""Model runtimes behind the seam in ``engine.backend``; the scheduler knows none of them by name.

``open_backend`` is the one place that maps ``--backend`` to a module, so a
new runtime is one new module here and one line below.
"""

from __future__ import annotations

from pathlib import Path

from engine.backend import Backend
from engine.errors import ModelUnavailable

__all__ = ["open_backend"]


def open_backend(kind: str, model_dir: Path, precision: str = "auto", device: str = "cpu") -> Backend:
    """Load ``model_dir`` into the runtime ``kind`` (``auto`` or ``torch``) in the given precision."""
    if kind in ("auto", "torch"):
        from engine.backends.torch_backend import TorchBackend
        from engine.loader import load_model

        return TorchBackend(load_model(model_dir, precision=precision, device=device))
    raise ModelUnavailable(f"Unknown backend {kind!r}; use auto or torch.")

"""The one exception hierarchy of Qwen All-in-One; ``AllInOneError``'s docstring draws the tree.

Every error a user or an API client can see is an ``AllInOneError`` whose ``user_message`` is the
friendly text (UI and API alike), never a stack trace. Library errors are translated at the engine
boundary with ``raise ... from exc``, so the cause stays in the logs.
"""

from __future__ import annotations

__all__ = [
    "AllInOneError",
    "InvalidInput",
    "ModelUnavailable",
    "ModelNotFound",
    "ModelDamaged",
    "SelfTestFailed",
    "WorkerLost",
    "WorkerGone",
    "Busy",
    "Superseded",
    "InferenceTimeout",
    "InferenceFailed",
    "InvalidOutput",
    "ModelInstallError",
    "ModelPartError",
    "ConfigError",
]


class AllInOneError(Exception):
    """Base class. ``str(err)`` is the user-facing message. The tree:

    AllInOneError
    ├── InvalidInput        the request itself is wrong (empty text, unknown task)
    ├── ModelUnavailable    no usable model: missing/broken directory, loading, recovering
    │   ├── ModelNotFound   the model directory is missing or not a model
    │   ├── ModelDamaged    a store version's files no longer match its MANIFEST
    │   ├── SelfTestFailed  a loaded model gave a wrong or invalid answer to a known-answer probe
    │   └── WorkerLost      the worker process ended (killed, crashed, replaced) with this request in it
    │       └── WorkerGone  ...before it took this request: it never ran, so it may be sent again
    ├── Busy                admission control: too much work queued, retry shortly
    ├── Superseded          a newer chat message from the same session replaced this one
    ├── InferenceTimeout    a request ran past its wall-clock limit
    ├── InferenceFailed     the model raised while answering this request (a request error)
    │   └── InvalidOutput   the model produced garbage (NaN/inf): a sick model, reloaded at once
    ├── ModelInstallError   assembling, converting or installing a model failed
    │   └── ModelPartError  a catalogue model's part package is missing or bad (``package`` names it)
    └── ConfigError         bad configuration (task registry, flags)
    """

    default_message = "Something went wrong. Please try again."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def user_message(self) -> str:
        return str(self)


class InvalidInput(AllInOneError):
    default_message = "The request is not valid."


class ModelUnavailable(AllInOneError):
    default_message = "The model is not ready (loading or recovering). Please retry shortly."


class ModelNotFound(ModelUnavailable):
    default_message = "No model is installed. Run: python -m ops.models install-default"


class ModelDamaged(ModelUnavailable):
    default_message = "The model's files do not match their MANIFEST (damaged or tampered with)."


class SelfTestFailed(ModelUnavailable):
    default_message = "The model failed its self-test."


class WorkerLost(ModelUnavailable):
    default_message = "The model is recovering from a fault and this request was stopped. Please retry shortly."


class WorkerGone(WorkerLost):
    """The worker ended before it admitted the request: nothing of it ran (safe to send again)."""


class Busy(AllInOneError):
    default_message = "The service is busy. Please try again shortly."


class Superseded(AllInOneError):
    default_message = "This answer was stopped because a newer message from the same session replaced it."


class InferenceTimeout(AllInOneError):
    default_message = "The request took too long and was stopped. Please try again."


class InferenceFailed(AllInOneError):
    default_message = "The model failed to answer. Please try again shortly."


class InvalidOutput(InferenceFailed):
    default_message = "The model produced invalid numbers (NaN/inf); it will be reloaded."


class ModelInstallError(AllInOneError):
    default_message = "Installing the model failed."


class ModelPartError(ModelInstallError):
    """A catalogue model's part package cannot be installed, names no file, or does not match the catalogue."""

    default_message = "A model part is missing or damaged."

    def __init__(self, message: str | None = None, package: str = "") -> None:
        super().__init__(message)
        self.package = package


class ConfigError(AllInOneError):
    default_message = "The configuration is not valid."

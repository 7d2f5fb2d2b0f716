"""The engine: the model's side of the seam, and the only package that imports torch and transformers.

Importing ``engine`` is cheap: the modules that import torch (``engine.loader``'s model code,
``engine.backends.torch_*``, ``engine.int8``, ``engine.variants``'s loading) are loaded only by the
worker process that runs a model. ``ui/`` and ``ops/`` use the pure modules: ``engine.types``,
``engine.errors``, ``engine.tasks``, ``engine.ipc``. The map is in ``docs/architecture.md``; the detail in ``docs/internals.md``.
"""

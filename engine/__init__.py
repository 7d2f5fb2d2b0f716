"""The engine: the only package that imports torch and transformers.

Importing ``engine`` is cheap: the heavy modules (``engine.engine``,
``engine.loader``'s model code, ``engine.classify``, ``engine.generate``)
import torch and are loaded only by the code that runs a model. ``ui/`` and
``ops/`` use ``engine.types``, ``engine.errors`` and ``engine.tasks``.
"""

"""The task kinds: one module each (``classify``, ``generate``), and the registry over them (``registry``).

A kind module fills in an ``engine.kinds.base.Kind``: its task, request and result types, the edge's check,
the worker's admission and its rounds. A new kind is its module and one line in ``registry.KINDS``.
"""

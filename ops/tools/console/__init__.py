"""The console for a few nodes: ``python -m ops.console --nodes URL,URL,...`` (no torch, no model).

A small Gradio app watching several instances, for a lab without Prometheus: ``promtext`` (reading
``/metrics``), ``alerts`` (three rules from ``ops/deploy/prometheus/alerts.yml``), ``poller`` (one
shared poller), ``actions`` (reload, rollback, gray release) and ``page``; ``__main__`` wires them.
Importing the package starts nothing.
"""

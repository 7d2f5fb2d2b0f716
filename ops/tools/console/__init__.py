"""The console for a few nodes: ``python -m ops.console --nodes URL,URL,...`` (no torch, no model).

A small Gradio app of its own that watches several All-in-One instances from
one place, for a lab without Prometheus and Grafana:

- ``promtext``: a node's ``/metrics`` read into numbers, and the maths on two reads;
- ``alerts``: three alert rules, read from ``ops/deploy/prometheus/alerts.yml``;
- ``poller``: the one background poller every viewer shares, and each node's history;
- ``actions``: reload, rollback and gray release, behind the admin token, and their log;
- ``page``: the Gradio page; ``__main__``: options and wiring.

Importing the package starts nothing.
"""

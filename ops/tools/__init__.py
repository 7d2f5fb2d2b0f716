"""Operator tools, each a command of its own beside the app: the multi-node console, the HA demo and its
failover drill, and fitting the classify heads. The deployment files they use sit in ``ops/deploy/``."""

"""Ports and hosts: a free local port (the HA demo, tests, benches) and the hosts that count as local."""

from __future__ import annotations

import socket

__all__ = ["LOCAL_HOSTS", "free_port"]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

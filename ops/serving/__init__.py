"""The web process's serving path: the worker supervisor and its processes, the lifecycle flows, the
watchdog, readiness and health, request limits, metrics and logs, and the app's configuration."""

"""The HTTP APIs beside the UI: OpenAI-compatible ``/v1``, and ``/admin`` with the tasks defined at run
time and the fits that teach them by example."""

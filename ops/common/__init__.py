"""Small helpers that several parts of ``ops`` (and the tests and benches) share: paths, ports, memory."""

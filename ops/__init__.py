"""The web process's side, one package per role: ``serving``, ``store``, ``api``, ``tools`` (and
``common`` helpers, ``deploy/`` files). Never imports torch: it drives the engine through its typed
interface. ``docs/architecture.md`` maps the packages."""

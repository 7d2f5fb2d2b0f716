"""Operations: configuration, model lifecycle, health and readiness, logging,
the model store CLI (``python -m ops.models``) and deployment files. Never
imports torch: it drives the engine through its typed interface."""

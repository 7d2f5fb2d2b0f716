"""Architecture rules that a test can check: only engine/ imports torch, and
nothing heavy happens at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "transformers", "tokenizers", "safetensors", "gguf", "accelerate"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_engine_imports_torch_and_transformers():
    offenders = []
    for folder in ("ui", "ops"):
        for path in (REPO / folder).rglob("*.py"):
            bad = imported_roots(path) & HEAVY
            if bad:
                offenders.append(f"{path.relative_to(REPO)}: {sorted(bad)}")
    assert not offenders, offenders
    assert imported_roots(REPO / "app.py") & HEAVY == set()


def test_importing_the_app_loads_no_model_code():
    code = "import sys, app, ui.demo, ops.lifecycle, ops.models; print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (HEAVY,)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

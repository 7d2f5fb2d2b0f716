"""The code's shape stays small: short module docstrings, modules of at most 400 lines, classes of at most
15 methods, in engine/, ops/, ui/ and app.py (tests/ and bench/ are free). docs/architecture.md holds the story."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MAX_DOC_LINES = 8  # the module docstring, its quote lines included
MAX_MODULE_LINES = 400
MAX_METHODS = 15  # functions defined in a class body, properties included


def code_files(root: Path) -> list[Path]:
    files = [root / "app.py"] if (root / "app.py").exists() else []
    return files + sorted(p for folder in ("engine", "ops", "ui") if (root / folder).is_dir()
                          for p in (root / folder).rglob("*.py"))


def layout_problems(root: Path) -> tuple[list[str], set[str]]:
    """(problems, the classes over MAX_METHODS) for the code under ``root``."""
    problems, large = [], set()
    for path in code_files(root):
        name = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            problems.append(f"{name}: {lines} lines (at most {MAX_MODULE_LINES})")
        first = tree.body[0] if tree.body else None
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            problems.append(f"{name}: no module docstring")
        elif first.end_lineno - first.lineno + 1 > MAX_DOC_LINES:
            problems.append(f"{name}: a module docstring of {first.end_lineno - first.lineno + 1} lines "
                            f"(at most {MAX_DOC_LINES}; the rest goes to docs/architecture.md)")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)) for b in node.body)
                if methods > MAX_METHODS:
                    large.add(f"{name}:{node.name}")
                    problems.append(f"{name}:{node.name}: {methods} methods (at most {MAX_METHODS})")
    return problems, large


def test_modules_are_short_and_classes_small():
    problems, _ = layout_problems(REPO)
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_a_long_module(tmp_path):
    (tmp_path / "app.py").write_text('"""One line."""\n')
    (tmp_path / "ops").mkdir()
    doc = '"""A module that talks too much.\n\n' + "More words.\n" * 8 + '"""\n'
    methods = "".join(f"    def m{i}(self):\n        return {i}\n" for i in range(MAX_METHODS + 1))
    filler = "".join(f"X{i} = {i}\n" for i in range(MAX_MODULE_LINES))
    (tmp_path / "ops" / "big.py").write_text(doc + "\n\nclass Big:\n" + methods + filler)
    (tmp_path / "ops" / "bare.py").write_text("X = 1\n")
    problems, large = layout_problems(tmp_path)
    assert large == {"ops/big.py:Big"}
    assert any(p.startswith("ops/big.py: ") and "lines (at most 400)" in p for p in problems), problems
    assert any("a module docstring of 11 lines" in p for p in problems), problems
    assert any(p.startswith("ops/big.py:Big: 16 methods") for p in problems), problems
    assert "ops/bare.py: no module docstring" in problems
    assert len(problems) == 4, problems

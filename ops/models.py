"""The model store's command line.

    python -m ops.models install-default        assemble + convert the embedded model, activate it
    python -m ops.models install SRC [--version V]
    python -m ops.models list
    python -m ops.models verify [V]
    python -m ops.models activate V
    python -m ops.models rollback

``--root DIR`` (or ``ALLINONE_MODELS_ROOT``) picks the store; default ``models/``.
Every refusal says why and exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from engine.errors import AllInOneError, ModelInstallError
from ops.config import REPO_ROOT
from ops.store import ModelStore

__all__ = ["main"]


def _install_default(store: ModelStore) -> int:
    from engine.default_model import DEFAULT_MODEL_NAME, DEFAULT_MODEL_VERSION, assemble_gguf, convert_gguf

    key = f"{DEFAULT_MODEL_NAME}@{DEFAULT_MODEL_VERSION}"
    if any(v.key == key for v in store.versions()):
        print(f"{key} is already installed in {store.root}.")
    else:
        def build(staging: Path) -> None:
            with tempfile.TemporaryDirectory(dir=store.root, prefix=".gguf-") as tmp:
                gguf = assemble_gguf(Path(tmp))
                convert_gguf(gguf, staging)

        path = store.install(DEFAULT_MODEL_NAME, DEFAULT_MODEL_VERSION, build)
        print(f"Installed {key} at {path}.")
    if store.current() is None:
        store.activate(key)
        print(f"Activated {key}.")
    return 0


def _install(store: ModelStore, src: Path, version: str | None) -> int:
    src = src.resolve()
    if not (src / "config.json").is_file():
        raise ModelInstallError(f"{src} is not a model directory (no config.json).")
    for p in src.rglob("*"):
        if p.is_symlink() and not p.resolve().is_relative_to(src):
            raise ModelInstallError(f"{p} is a link that leaves {src}; copy the real files instead.")
    name = src.name.partition("@")[0]
    path = store.install(name, version or "1", lambda staging: shutil.copytree(src, staging, dirs_exist_ok=True))
    print(f"Installed {path.name}. Activate it with: python -m ops.models activate {path.name}")
    return 0


def _list(store: ModelStore) -> int:
    versions = store.versions()
    if not versions:
        print(f"No models in {store.root}. Run: python -m ops.models install-default")
        return 0
    for v in versions:
        mark = "current" if v.is_current else "previous" if v.is_previous else ""
        print(f"{v.key:45s} {v.size_bytes / 1e6:9.1f} MB  {mark}")
    return 0


def _verify(store: ModelStore, key: str | None) -> int:
    keys = [key] if key else [v.key for v in store.versions()]
    bad = 0
    for k in keys:
        problems = store.verify(k)
        print(f"{k}: {'OK' if not problems else 'FAILED'}")
        for p in problems:
            print(f"  {p}")
        bad += bool(problems)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.models", description="Manage the model store.")
    parser.add_argument("--root", type=Path,
                        default=Path(os.environ.get("ALLINONE_MODELS_ROOT", REPO_ROOT / "models")))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install-default", help="assemble, verify and convert the embedded default model")
    p_install = sub.add_parser("install", help="copy a model directory into the store")
    p_install.add_argument("src", type=Path)
    p_install.add_argument("--version")
    sub.add_parser("list", help="installed versions, current and previous")
    p_verify = sub.add_parser("verify", help="check files against their MANIFEST")
    p_verify.add_argument("version", nargs="?")
    p_activate = sub.add_parser("activate", help="make a version current (atomically)")
    p_activate.add_argument("version")
    sub.add_parser("rollback", help="make the previous version current again")
    args = parser.parse_args(argv)
    store = ModelStore(args.root)
    try:
        if args.command == "install-default":
            return _install_default(store)
        if args.command == "install":
            return _install(store, args.src, args.version)
        if args.command == "list":
            return _list(store)
        if args.command == "verify":
            return _verify(store, args.version)
        if args.command == "activate":
            store.activate(args.version)
            print(f"current -> {args.version}")
            return 0
        if args.command == "rollback":
            print(f"current -> {store.rollback()}")
            return 0
    except AllInOneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

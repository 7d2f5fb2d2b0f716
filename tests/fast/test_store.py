"""The model store CLI on the tiny model: install, list, verify, activate, rollback."""

from __future__ import annotations

import os
import stat

import pytest

from ops.models import main as models_cli
from ops.store import ModelStore


@pytest.fixture()
def store_root(tmp_path):
    return tmp_path / "models"


def cli(root, *args):
    return models_cli(["--root", str(root), *args])


def test_install_seals_a_read_only_version_with_a_manifest(tiny_model_dir, store_root, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    version = store_root / "tiny-qwen2@1"
    assert (version / "MANIFEST").is_file()
    for path in [version, *version.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o555 if path.is_dir() else 0o444), path
    assert cli(store_root, "verify", "tiny-qwen2@1") == 0
    assert "OK" in capsys.readouterr().out


def test_versions_are_never_overwritten(tiny_model_dir, store_root, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 1
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["../evil", "a/b", ".."])
def test_unsafe_names_are_refused(tiny_model_dir, store_root, version, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", version) == 1
    assert "Invalid model version" in capsys.readouterr().err
    assert not store_root.exists() or not any(store_root.iterdir())


def test_activate_and_rollback_switch_links(tiny_model_dir, store_root, capsys):
    for v in ("1", "2"):
        assert cli(store_root, "install", str(tiny_model_dir), "--version", v) == 0
    assert cli(store_root, "activate", "tiny-qwen2@1") == 0
    assert cli(store_root, "activate", "tiny-qwen2@2") == 0
    store = ModelStore(store_root)
    assert (store.current(), store.previous()) == ("tiny-qwen2@2", "tiny-qwen2@1")
    assert cli(store_root, "rollback") == 0
    assert store.current() == "tiny-qwen2@1"
    capsys.readouterr()
    assert cli(store_root, "list") == 0
    listing = capsys.readouterr().out
    assert "tiny-qwen2@1" in listing and "current" in listing and "previous" in listing


def test_a_tampered_version_fails_verify_and_cannot_be_activated(tiny_model_dir, store_root, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    weights = store_root / "tiny-qwen2@1" / "model.safetensors"
    os.chmod(weights, 0o644)
    with open(weights, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    assert cli(store_root, "verify", "tiny-qwen2@1") == 1
    assert cli(store_root, "activate", "tiny-qwen2@1") == 1
    assert "fails verification" in capsys.readouterr().err
    assert ModelStore(store_root).current() is None


def test_a_failed_build_leaves_nothing_behind(store_root):
    store = ModelStore(store_root)

    def build(staging):
        (staging / "config.json").write_text("{}")
        raise RuntimeError("conversion died")

    with pytest.raises(RuntimeError):
        store.install("m", "1", build)
    assert list(store_root.iterdir()) == []

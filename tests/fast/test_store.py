"""The model store CLI on the tiny model: every command, every refusal, and crash consistency."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.variants import INT8_VARIANT, int8_variant_problem
from ops.store.cli import main as models_cli
from ops.store.manifest import weights_bytes
from ops.store.versions import ModelStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store_root(tmp_path):
    return tmp_path / "models"


def cli(root, *args):
    return models_cli(["--root", str(root), *args])


def tamper(path: Path, offset: int = 100) -> None:
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def writable_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    for p in [dest, *dest.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    return dest


def entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != ".lock")


# ----- install ------------------------------------------------------------------------


def test_install_seals_a_read_only_version_with_a_manifest(tiny_model_dir, store_root, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    version = store_root / "tiny-qwen2@1"
    manifest = json.loads((version / "MANIFEST").read_text())
    on_disk = {str(p.relative_to(version)) for p in version.rglob("*") if p.is_file()} - {"MANIFEST"}
    assert set(manifest["files"]) == on_disk and on_disk
    assert manifest["files"]["model.safetensors"]["size"] == (version / "model.safetensors").stat().st_size
    for path in [version, *version.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o555 if path.is_dir() else 0o444), path
    assert cli(store_root, "verify", "tiny-qwen2@1") == 0
    assert "OK" in capsys.readouterr().out


def test_install_takes_name_and_version_from_the_source_or_the_flags(tiny_model_dir, store_root):
    assert cli(store_root, "install", str(tiny_model_dir)) == 0  # tiny-qwen2@test: the name says both
    assert cli(store_root, "install", str(tiny_model_dir), "--name", "other", "--version", "7") == 0
    assert ModelStore(store_root).keys() == ["other@7", "tiny-qwen2@test"]


def test_a_store_version_can_be_installed_again_under_a_new_version(tiny_model_dir, store_root):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    assert cli(store_root, "install", str(store_root / "tiny-qwen2@1"), "--version", "2") == 0
    assert cli(store_root, "verify", "tiny-qwen2@2") == 0  # its old MANIFEST was rebuilt, not copied


def test_versions_are_never_overwritten(tiny_model_dir, store_root, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    before = (store_root / "tiny-qwen2@1" / "MANIFEST").read_text()
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 1
    assert "never overwritten" in capsys.readouterr().err
    assert (store_root / "tiny-qwen2@1" / "MANIFEST").read_text() == before


@pytest.mark.parametrize("flag, value", [("--version", "../evil"), ("--version", "a/b"), ("--version", ".."),
                                         ("--name", "../x"), ("--name", "a/b"), ("--version", "")])
def test_unsafe_names_are_refused(tiny_model_dir, store_root, flag, value, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), flag, value) == 1
    assert "Invalid model" in capsys.readouterr().err
    assert not store_root.exists() or entries(store_root) == []


def test_a_link_leaving_the_source_is_refused(tiny_model_dir, tmp_path, store_root, capsys):
    src = writable_copy(tiny_model_dir, tmp_path / "linked")
    outside = tmp_path / "tokenizer-elsewhere.json"
    shutil.move(src / "tokenizer.json", outside)
    (src / "tokenizer.json").symlink_to(outside)
    assert cli(store_root, "install", str(src), "--version", "1") == 1
    assert "leaves" in capsys.readouterr().err
    assert not (store_root / "linked@1").exists()


def test_a_link_inside_the_source_is_copied_as_a_file(tiny_model_dir, tmp_path, store_root):
    src = writable_copy(tiny_model_dir, tmp_path / "linked")
    (src / "sub").mkdir()
    shutil.move(src / "tokenizer.json", src / "sub" / "tokenizer.json")
    (src / "tokenizer.json").symlink_to("sub/tokenizer.json")
    assert cli(store_root, "install", str(src), "--version", "1") == 0
    installed = store_root / "linked@1" / "tokenizer.json"
    assert installed.is_file() and not installed.is_symlink()


def test_a_version_keeps_both_weight_files_and_list_says_which_runtimes_serve_it(tiny_model_dir, tmp_path,
                                                                               store_root, capsys):
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    gguf_only = writable_copy(tiny_model_dir, tmp_path / "gguf-only")
    for path in gguf_only.iterdir():
        if path.suffix != ".gguf":
            path.unlink() if path.is_file() else shutil.rmtree(path)
    assert cli(store_root, "install", str(gguf_only), "--version", "2") == 0
    manifest = json.loads((store_root / "tiny-qwen2@1" / "MANIFEST").read_text())["files"]
    assert {"model.safetensors", "tiny-qwen2.gguf"} <= set(manifest)
    capsys.readouterr()
    assert cli(store_root, "list") == 0
    out = capsys.readouterr().out
    only, both = out.split("tiny-qwen2@1")  # listed by name: gguf-only@2 first
    assert "runtimes: torch (safetensors), llamacpp (tiny-qwen2.gguf" in both
    assert "runtimes: llamacpp (tiny-qwen2.gguf" in only and "torch" not in only.split("variants")[0]
    assert "variants: none" in only  # no int8 variant: there are no torch weights to make it from


@pytest.mark.parametrize("breakage, message", [
    ("no-config", "no config.json"),
    ("no-weights", "no weights"),
    ("not-a-gguf", "not a GGUF file"),
    ("truncated-weights", "truncated"),
    ("no-tokenizer", "no tokenizer"),
    ("no-template", "no chat template"),
    ("not-a-dir", "not a directory"),
])
def test_a_source_that_is_not_a_loadable_model_is_refused(tiny_model_dir, tmp_path, store_root, breakage, message,
                                                          capsys):
    src = writable_copy(tiny_model_dir, tmp_path / "broken")
    if breakage == "no-config":
        (src / "config.json").unlink()
    elif breakage == "no-weights":
        (src / "model.safetensors").unlink()
        (src / "tiny-qwen2.gguf").unlink()
    elif breakage == "not-a-gguf":  # a version for the llamacpp backend alone, whose GGUF is not one
        (src / "model.safetensors").unlink()
        (src / "tiny-qwen2.gguf").write_bytes(b"not a model")
    elif breakage == "truncated-weights":
        with open(src / "model.safetensors", "r+b") as f:
            f.truncate(src.joinpath("model.safetensors").stat().st_size - 10)
    elif breakage == "no-tokenizer":
        (src / "tokenizer.json").unlink()
    elif breakage == "no-template":
        (src / "chat_template.jinja").unlink()
    else:
        shutil.rmtree(src)
        src.write_text("a file")
    assert cli(store_root, "install", str(src), "--version", "1") == 1
    assert message in capsys.readouterr().err
    assert not store_root.exists() or entries(store_root) == []


def test_immutable_install_says_clearly_when_chattr_is_not_possible(tiny_model_dir, store_root, tmp_path,
                                                                    monkeypatch, capsys):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "chattr"
    fake.write_text("#!/bin/sh\necho 'chattr: Operation not supported while setting flags' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_bin))
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1", "--immutable") == 0
    err = capsys.readouterr().err
    assert "chattr +i is not possible here (chattr: Operation not supported" in err and "read-only" in err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "2", "--immutable") == 0
    assert "chattr command is not installed" in capsys.readouterr().err


def test_install_makes_the_variant_under_the_manifest(tiny_model_dir, store_root, capsys):
    """Both installs make the int8 variant (engine.variants) unless told not to."""
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "1") == 0
    assert cli(store_root, "install", str(tiny_model_dir), "--version", "2", "--no-int8") == 0
    store = ModelStore(store_root)
    with_int8, without = store_root / "tiny-qwen2@1", store_root / "tiny-qwen2@2"
    assert int8_variant_problem(with_int8) is None and int8_variant_problem(without) is not None
    assert store.verify("tiny-qwen2@1") == []  # the MANIFEST covers it
    (with_int8 / INT8_VARIANT).chmod(0o644)
    with open(with_int8 / INT8_VARIANT, "r+b") as f:  # one byte changed: the full check must see it
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    assert store.verify("tiny-qwen2@1") == [f"{INT8_VARIANT}: SHA-256 mismatch"]
    assert weights_bytes(with_int8) == weights_bytes(without)  # a variant is not what fp32 loads
    capsys.readouterr()
    assert cli(store_root, "list") == 0
    listing = capsys.readouterr().out
    assert "variants: int8" in listing and "variants: none (int8 quantizes at every load)" in listing


# ----- list, verify, activate, rollback ---------------------------------------------------


@pytest.fixture()
def two_versions(tiny_model_dir, store_root):
    for v in ("1", "2"):
        assert cli(store_root, "install", str(tiny_model_dir), "--version", v) == 0
    return ModelStore(store_root)


def test_activate_and_rollback_switch_links(two_versions, store_root, capsys):
    store = two_versions
    assert cli(store_root, "activate", "tiny-qwen2@1") == 0
    assert cli(store_root, "activate", "2") == 0  # a bare version is enough when it is unambiguous
    assert (store.current(), store.previous()) == ("tiny-qwen2@2", "tiny-qwen2@1")
    assert os.readlink(store_root / "current") == "tiny-qwen2@2"  # relative: the store can be moved
    assert cli(store_root, "rollback") == 0
    assert (store.current(), store.previous()) == ("tiny-qwen2@1", "tiny-qwen2@2")
    capsys.readouterr()
    assert cli(store_root, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("tiny-qwen2@1" in line and "current" in line and "sizes ok" in line for line in lines)
    assert any("tiny-qwen2@2" in line and "previous" in line for line in lines)
    assert any(line.startswith("links: current -> tiny-qwen2@1") for line in lines)


def test_other_links_have_their_own_previous(two_versions, store_root):
    store = two_versions
    assert cli(store_root, "activate", "tiny-qwen2@1") == 0
    assert cli(store_root, "activate", "tiny-qwen2@1", "--link", "standby") == 0
    assert cli(store_root, "activate", "tiny-qwen2@2", "--link", "standby") == 0
    assert store.current() == "tiny-qwen2@1" and store.current("standby") == "tiny-qwen2@2"
    assert store.previous("standby") == "tiny-qwen2@1" and store.previous() is None
    assert cli(store_root, "activate", "tiny-qwen2@2", "--link", "previous") == 1


@pytest.mark.parametrize("args, message", [
    (["activate", "tiny-qwen2@9"], "No version"),
    (["activate", "9"], "No version"),
    (["activate", "../x"], "Invalid version"),
    (["rollback"], "Nothing to roll back to"),
    (["verify", "nope@1"], "no version"),
])
def test_refusals_say_why_and_exit_non_zero(two_versions, store_root, args, message, capsys):
    assert cli(store_root, *args) == 1
    captured = capsys.readouterr()
    assert message in captured.err + captured.out


def test_a_tampered_version_fails_verify_and_cannot_be_activated(two_versions, store_root, capsys):
    tamper(store_root / "tiny-qwen2@1" / "model.safetensors")
    assert cli(store_root, "verify", "tiny-qwen2@1") == 1
    assert "SHA-256 mismatch" in capsys.readouterr().out
    assert cli(store_root, "verify") == 1  # all versions: one is bad
    assert cli(store_root, "activate", "tiny-qwen2@1") == 1
    assert "fails verification" in capsys.readouterr().err
    assert two_versions.current() is None
    (store_root / "tiny-qwen2@2" / "extra.txt").parent.chmod(0o755)
    (store_root / "tiny-qwen2@2" / "extra.txt").write_text("smuggled")
    capsys.readouterr()
    assert cli(store_root, "list", "--verify") == 0
    out = capsys.readouterr().out
    assert "tiny-qwen2@1" in out and "SHA-256 mismatch" in out and "extra.txt: not in MANIFEST" in out


def test_activate_hashes_only_files_changed_since_they_were_last_hashed(two_versions, store_root, monkeypatch):
    """Installing hashed every file (its MANIFEST): activating the untouched version hashes nothing, so a
    hot swap waits only for the new worker. A file changed in place is hashed again, even with its size
    and mtime put back (its ctime cannot be), and refused."""
    import ops.store.manifest

    hashed = []
    real_sha256 = ops.store.manifest._sha256
    monkeypatch.setattr(ops.store.manifest, "_sha256", lambda path: hashed.append(path.name) or real_sha256(path))
    assert cli(store_root, "activate", "tiny-qwen2@1") == 0
    assert hashed == []
    weights = store_root / "tiny-qwen2@2" / "model.safetensors"
    before = weights.stat()
    tamper(weights)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert cli(store_root, "activate", "tiny-qwen2@2") == 1
    assert "model.safetensors" in hashed and two_versions.current() == "tiny-qwen2@1"


def test_a_version_the_app_rolled_back_needs_force(two_versions, store_root, capsys):
    store = two_versions
    store.activate("tiny-qwen2@1")
    store.activate("tiny-qwen2@2")
    assert store.point_back("current", "tiny-qwen2@2", "tiny-qwen2@1", "self-test failed: wrong answer")
    assert (store.current(), store.previous()) == ("tiny-qwen2@1", "tiny-qwen2@2")
    assert cli(store_root, "rollback") == 1
    assert "rolled back by the app (self-test failed: wrong answer)" in capsys.readouterr().err
    assert cli(store_root, "list") == 0
    assert "rolled back by the app: self-test failed" in capsys.readouterr().out
    assert cli(store_root, "activate", "tiny-qwen2@2", "--force") == 0
    assert store.current() == "tiny-qwen2@2" and store.rejected() == {}


def test_point_back_leaves_a_link_an_operator_moved_meanwhile(two_versions):
    store = two_versions
    store.activate("tiny-qwen2@1")
    store.activate("tiny-qwen2@2")
    assert not store.point_back("current", "tiny-qwen2@1", "tiny-qwen2@2", "late failure")
    assert store.current() == "tiny-qwen2@2"
    assert "tiny-qwen2@1" in store.rejected()


def test_a_failed_build_leaves_nothing_behind(store_root):
    store = ModelStore(store_root)

    def build(staging):
        (staging / "config.json").write_text("{}")
        raise RuntimeError("conversion died")

    with pytest.raises(RuntimeError):
        store.install("m", "1", build)
    assert entries(store_root) == []


# ----- crash consistency -------------------------------------------------------------------

# Runs one CLI command and dies (os._exit, no cleanup) at the Nth file-system step.
CRASHER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from ops.store.cli import main
    limit, calls = int(sys.argv[1]), [0]

    def dying(fn):
        def step(*args, **kwargs):
            calls[0] += 1
            if calls[0] == limit:
                os._exit(17)
            return fn(*args, **kwargs)
        return step

    for name in ("rename", "replace", "symlink", "chmod", "mkdir", "fsync", "unlink"):
        setattr(os, name, dying(getattr(os, name)))
    Path.write_text = dying(Path.write_text)
    sys.exit(main(sys.argv[2:]))
""")


def assert_consistent(root: Path) -> None:
    """Every named version is complete, and every link names one."""
    store = ModelStore(root)
    for key in store.keys():
        assert store.verify(key) == [], key
    for link in (p for p in root.iterdir() if p.is_symlink() and not p.name.startswith(".")):
        assert os.readlink(link) in store.keys(), link


def links(root: Path) -> tuple:
    store = ModelStore(root)
    return store.current(), store.previous()


@pytest.mark.parametrize("command", ["install", "activate", "rollback"])
def test_the_store_survives_a_crash_between_any_two_steps(tiny_model_dir, tmp_path, command):
    base = tmp_path / "base"
    assert cli(base, "install", str(tiny_model_dir), "--version", "1") == 0
    assert cli(base, "install", str(tiny_model_dir), "--version", "2") == 0
    assert cli(base, "activate", "tiny-qwen2@1") == 0
    if command == "rollback":
        assert cli(base, "activate", "tiny-qwen2@2") == 0
    # --no-int8: the variant is one more file of the staged build; making it in every crashing
    # subprocess would import torch ~100 times over and add nothing to what this test checks.
    args = {"install": ["install", str(tiny_model_dir), "--version", "3", "--no-int8"],
            "activate": ["activate", "tiny-qwen2@2"], "rollback": ["rollback"]}[command]
    script = tmp_path / "crash.py"
    script.write_text(CRASHER.format(repo=str(REPO)))
    before, crashes = links(base), 0
    for step in range(1, 200):
        root = tmp_path / f"run{step}"
        subprocess.run(["cp", "-a", str(base), str(root)], check=True)
        done = subprocess.run([sys.executable, str(script), str(step), "--root", str(root), *args],
                              capture_output=True, text=True)
        if done.returncode == 0:
            break
        assert done.returncode == 17, done.stderr
        crashes += 1
        assert cli(root, "list") == 0  # finishes a half-done switch, sweeps leftovers
        assert_consistent(root)
        after = links(root)
        if command == "install":
            assert after == before
            assert ModelStore(root).keys() in (["tiny-qwen2@1", "tiny-qwen2@2"],
                                               ["tiny-qwen2@1", "tiny-qwen2@2", "tiny-qwen2@3"])
            assert not [p for p in root.iterdir() if p.name.startswith(".staging")]
            if "tiny-qwen2@3" not in ModelStore(root).keys():
                assert cli(root, *args) == 0  # the install can simply be run again
        else:
            expected_after = {"activate": ("tiny-qwen2@2", "tiny-qwen2@1"),
                              "rollback": ("tiny-qwen2@1", "tiny-qwen2@2")}[command]
            assert after in (before, expected_after), (step, after)
        assert not [p for p in root.iterdir() if ".tmp-" in p.name or p.name == ".switch.json"]
    else:
        pytest.fail("the command never completed")
    assert crashes >= 3  # the crash points really fell between steps


def test_a_source_is_a_store_link_only_when_it_is_one(tmp_path, two_versions, store_root):
    from ops.store.versions import ModelSource

    assert ModelSource(tmp_path / "nothing-yet" / "current").store is not None  # current before any install
    plain = tmp_path / "plain" / "current"
    plain.mkdir(parents=True)
    assert ModelSource(plain).store is None and ModelSource(plain).active() == plain
    two_versions.activate("tiny-qwen2@1")
    source = ModelSource(store_root / "current")
    assert source.active() == (store_root / "tiny-qwen2@1").resolve()
    stamp = source.stamp()
    two_versions.activate("tiny-qwen2@2")
    assert source.active().name == "tiny-qwen2@2" and source.stamp() != stamp

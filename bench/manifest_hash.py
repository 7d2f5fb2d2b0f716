"""What a full MANIFEST check (SHA-256 of every file) costs at load time, on the default model.

    .venv/bin/python bench/manifest_hash.py [--model models/current]

Times, in fresh processes so the page cache is equally warm: the hash alone,
the load alone (weights, tokenizer, warm-up), and the load with the hash
running beside it in another thread. This decided that the app checks sizes
at load and hashes in the background (see README, "Integrity").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import REPO, header, load_engine


def timed_hash(model: Path, out: dict) -> None:
    from ops.store.manifest import full_check

    started = time.perf_counter()
    problems = full_check(model)
    out["hash_s"] = round(time.perf_counter() - started, 1)
    out["problems"] = problems


def run(model: Path, mode: str) -> dict:
    out: dict = {"mode": mode}
    hasher = threading.Thread(target=timed_hash, args=(model, out))
    started = time.perf_counter()
    if mode in ("hash", "both"):
        hasher.start()
    if mode in ("load", "both"):
        load_engine(model).close()
        out["load_s"] = round(time.perf_counter() - started, 1)
    if hasher.is_alive() or mode != "load":
        hasher.join()
    out["total_s"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=REPO / "models" / "current")
    parser.add_argument("--mode", choices=("hash", "load", "both"))
    args = parser.parse_args()
    model = args.model.resolve()
    if args.mode:
        print(run(model, args.mode), flush=True)
        return
    header(f"MANIFEST hash cost on {model.name}")
    for mode in ("hash", "load", "both"):
        subprocess.run([sys.executable, __file__, "--model", str(model), "--mode", mode], check=True)


if __name__ == "__main__":
    main()

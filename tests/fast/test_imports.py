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


def test_the_scheduler_side_of_the_backend_seam_is_torch_free():
    """engine/: the scheduler, the seam, chats and fault drills never import torch; only backends
    (engine/backends/torch_*), the loader's format code (engine/int8.py) and the default-model
    converter do, and those lazily where the web process can reach them."""
    for name in ("engine.py", "kinds/__init__.py", "kinds/base.py", "kinds/registry.py", "kinds/classify.py",
                 "kinds/generate.py", "backend.py", "chat.py", "faults.py", "worker.py", "ipc.py",
                 "types.py", "prompts.py", "tasks.py", "replies.py", "heads.py", "atomic_file.py"):
        assert imported_roots(REPO / "engine" / name) & HEAVY == set(), name
    # The loader, the format choice and the backend registry import torch only when they load a model:
    code = ("import sys, engine.engine, engine.chat, engine.faults, engine.backends, engine.precision; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_importing_the_app_loads_no_model_code():
    code = ("import sys, app, ui.demo, ops.serving.lifecycle, ops.models, ops.heads; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (HEAVY,))
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_web_side_modules_load_no_model_code():
    """Everything the web process imports to start and talk to a worker stays torch-free."""
    modules = ("ops.serving.service, ops.serving.worker_process, ops.serving.supervisor, ops.serving.watchdog, "
               "ops.serving.metrics, ops.api.admin, engine.worker")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_console_loads_no_model_code():
    """``python -m ops.console`` (no torch, no model): its modules and the gray release it runs."""
    modules = ("ops.console, ops.tools.console, ops.tools.console.__main__, ops.tools.console.promtext, "
               "ops.tools.console.alerts, ops.tools.console.poller, ops.tools.console.actions, ops.tools.console.page, "
               "ops.store.gray")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# The running web process, after serving requests: its sys.modules, printed by the process itself.
_SERVE_AND_REPORT = """
import sys, threading, time
import httpx
import app
from ops.common.net import free_port
# No main guard on purpose: the worker is a fresh ``python -m engine.worker``, which does not re-run this script.
port = free_port()
threading.Thread(target=app.main, args=(["--port", str(port), *sys.argv[1:]],), daemon=True).start()
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if httpx.get(url + "/ready", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    time.sleep(0.2)
from gradio_client import Client
client = Client(url, verbose=False)
client.predict("The staff were lovely.", api_name="/sentiment")
client.predict("Hello", api_name="/chat")
worker = httpx.get(url + "/ready").json()["worker_pid"]
print("HEAVY", sorted(m for m in sys.modules if m.split(".")[0] in %r))
print("WORKER", worker)
"""


def test_the_running_web_process_never_loads_torch(tiny_app_args, tmp_path):
    """Served requests through the worker, then: torch is in the worker's memory, not the web's."""
    script = tmp_path / "serve_and_report.py"
    script.write_text(_SERVE_AND_REPORT % (HEAVY,))
    out = subprocess.run([sys.executable, str(script), *tiny_app_args, "--log-dir", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": ""})
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("HEAVY", "WORKER")))
    assert lines.get("HEAVY") == "[]", out.stdout + out.stderr[-3000:]
    assert lines.get("WORKER", "None").isdigit(), out.stdout + out.stderr[-3000:]


def test_torch_is_mapped_in_the_worker_and_not_in_the_web_process(live_app):
    import httpx

    worker = httpx.get(live_app.url + "/ready").json()["worker_pid"]
    web_maps = Path(f"/proc/{live_app.proc.pid}/maps").read_text()
    worker_maps = Path(f"/proc/{worker}/maps").read_text()
    assert "libtorch" in worker_maps  # the check can see torch where it is...
    assert "libtorch" not in web_maps  # ...and it is not in the web process

"""Which of the project's modules one classify request passes through, in both processes (issue 24).

    nice -n 19 .venv/bin/python bench/request_path.py [--task sentiment] [--text "I love it"] [--json]

Issue 24's target: "A sentiment request passes at most 10 of the project's modules from the Gradio
handler to the backend." This starts the real serving stack the way ``app.main`` wires it (config ->
``ModelService`` -> ``WebParts`` -> ``ui.demo.build_demo``), on the tiny Qwen2 test model
(``tests.tiny_model``, built into a temporary directory in a subprocess, so this web process never imports
torch) unless ``--model-dir`` names one; the worker is the real ``python -m engine.worker`` subprocess
that ``ops.serving.worker_process`` spawns. Once the model is in service (its self-test passed), it sends
ONE request through the function the task's tab calls on "Analyze" (``ui.classify_tab``'s ``analyze``,
taken from the built Blocks and called with the arguments Gradio passes it after preprocessing), or with
``--door api`` through the ``/<task>`` API function, after the validator Gradio's queue would run for it,
if the event has one (``BlockFunction.validator``).

A project module is a file under ``engine/``, ``ops/`` or ``ui/``, or ``app.py``, by path. A module is on
the request's path when a function of it is called, or is running (on a thread's stack when the request
reached that thread, like the worker's receive loop), while the request is served:

- web process: ``threading.settrace`` (set before the service starts, so the pipe's reader and writer
  threads carry it) and ``sys.settrace`` on the calling thread, call events only, recording nothing
  until the handler is called; recording stops a short settle time (``--settle-s``) after it returned,
  so the reader thread's bookkeeping for the reply is in. Only the calling thread and the serving
  worker's pipe threads (``worker-<pid>-reader``/``-writer``) count; whatever another thread ran in the
  window is listed as excluded. No watchdog is started (``app.main`` starts one: its vitals and self-test
  jobs would run the model between our marks), no warm spare, no HTTP server.
- worker process: a ``sitecustomize.py`` in a temporary directory on the ``PYTHONPATH`` that
  ``WorkerProcess.start`` hands the child (the parent's, with the repository put before it; the
  repository has no sitecustomize, and the interpreter's own one is still run) loads this file and
  installs the same recorder there (only in ``engine.worker`` children of this process):
  ``threading.settrace`` for the threads the worker starts, gated off; on "arm" (a file the web process
  writes once the model serves; a helper thread sees it and signals the main thread, which sets
  ``sys.settrace`` on itself) it waits for the worker's main thread to run project code (the request
  arriving in ``_serve``) and records from then on, keeping the main thread, ``worker-outbox`` and the
  ``model-worker[...]`` thread. So the load, the warm-up and the self-test are not counted, nor the
  engine's idle loop turns before the request came in. On "dump" (written once the handler returned) it
  records on to the end of the model thread's turn, the first pause of ``QUIET_S``, and writes what it
  recorded; a call after that pause (the next idle turn) is not recorded. Both processes stamp first calls
  with ``time.monotonic_ns`` (CLOCK_MONOTONIC: one clock for the machine), so the two lists merge into one
  path in order.

Nothing in the project is changed or patched. Takes 15-20 s (a loaded 2-core machine), most of it building
the tiny model and starting the worker.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Only the standard library at the top: the worker imports this file from its sitecustomize.
REPO = Path(__file__).resolve().parent.parent
PROJECT_DIRS = ("engine", "ops", "ui")
PROJECT_FILES = ("app.py",)
TARGET = 10  # issue 24
BACKEND_MODULES = ("engine/backends/", "engine/label_scoring.py")  # where "the backend" begins
ENV_DIR = "REQUEST_PATH_TRACE_DIR"  # where the worker's hook reads its commands and writes its trace
ENV_PARENT = "REQUEST_PATH_TRACE_PARENT"  # the web process's pid: only its worker children are traced
ARM, ARMED, DUMP = "arm", "armed", "dump"
POLL_S = 0.005
# The worker's window closes at the first pause this long after the web process had its answer: the model
# thread has ended the request's turn and waits for work (engine.engine.IDLE_POLL_S, 0.5 s, before an idle
# turn; a call after a pause this long is that idle turn, and is not recorded).
QUIET_S = 0.4  # well above a loaded thread's stall, below the 0.5 s idle poll
DUMP_WAIT_S = 10.0
WORKER_THREADS = ("MainThread", "worker-outbox", "model-worker[")  # engine/worker.py, engine/engine.py

SITECUSTOMIZE = """\
# Written by bench/request_path.py: trace the model worker (engine.worker) for one request.
import importlib.machinery as _m, importlib.util as _u, sys as _s
_here = __file__.rsplit("/", 1)[0]
_spec = _m.PathFinder.find_spec("sitecustomize", [p for p in _s.path if p.rstrip("/") != _here])
if _spec is not None:  # the interpreter's own sitecustomize, which this one shadows
    _own = _u.module_from_spec(_spec)
    _spec.loader.exec_module(_own)
_spec = _u.spec_from_file_location("_request_path_bench", {bench!r})
_bench = _u.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
_bench.worker_hook()
"""


# ----- the recorder (both processes) ------------------------------------------------------------

class Recorder:
    """First calls of project modules, per thread, while armed. ``opener``: the thread whose first project
    call opens the window (None: open when armed)."""

    IDLE, ARMED, RECORDING, STOPPED = range(4)

    def __init__(self, root: Path = REPO, opener: int | None = None) -> None:
        self.root = str(root)
        self.opener = opener
        self.state = self.IDLE
        self.ignored: set[int] = set()  # threads never recorded (the worker's tracing helper)
        self.t0: int | None = None
        self.closing = False  # the request was answered: stop at the next pause of QUIET_S
        self.last_ns = 0  # the last call seen while recording (any file, any recorded thread)
        self.ended_by: str | None = None
        self._files: dict = {}  # code object -> project path or None
        self._first: dict[tuple[int, str], tuple[int, int, str, str]] = {}  # (thread, module) -> first call
        self._threads: dict[int, str] = {}  # threads seen while recording -> name
        self._seq = itertools.count()

    def module_of(self, code) -> str | None:
        try:
            return self._files[code]
        except KeyError:
            pass
        name = code.co_filename
        rel = None
        if name.endswith(".py"):
            rel = os.path.relpath(os.path.realpath(name), self.root)
            top = rel.split(os.sep, 1)[0]
            if not ((top in PROJECT_DIRS and os.sep in rel) or rel in PROJECT_FILES):
                rel = None
        self._files[code] = rel
        return rel

    def arm(self) -> None:
        if self.opener is None:
            self.t0 = self.last_ns = time.monotonic_ns()
            self.state = self.RECORDING
        else:
            self.state = self.ARMED

    def stop(self, why: str = "told") -> None:
        if self.state != self.STOPPED:
            self.state, self.ended_by = self.STOPPED, why

    def trace(self, frame, event, arg):
        """The trace function: call events only (it never returns a local tracer)."""
        state = self.state
        if state != self.RECORDING:
            if state != self.ARMED or threading.get_ident() != self.opener or self.module_of(frame.f_code) is None:
                return None
            self.t0 = self.last_ns = time.monotonic_ns()  # the request reached the opener: the window opens
            self.state = self.RECORDING
        tid = threading.get_ident()
        if tid in self.ignored:
            return None
        now = time.monotonic_ns()
        if self.closing and now - self.last_ns >= QUIET_S * 1e9:  # a new burst after the request's: not ours
            self.stop("pause")
            return None
        self.last_ns = now
        if tid not in self._threads:  # what this thread is already running counts too (receive loops)
            self._threads[tid] = threading.current_thread().name
            running: dict[str, object] = {}  # module -> its innermost running code, outermost module first
            back = frame.f_back
            while back is not None:
                module = self.module_of(back.f_code)
                if module is not None and module not in running:
                    running[module] = back.f_code
                back = back.f_back
            for code in reversed(list(running.values())):
                self._note(tid, code, now, "running")
        self._note(tid, frame.f_code, now, "import" if frame.f_code.co_name == "<module>" else "call")
        return None

    def _note(self, tid: int, code, now: int, how: str) -> None:
        module = self.module_of(code)
        if module is not None and (tid, module) not in self._first:
            self._first[(tid, module)] = (now, next(self._seq), getattr(code, "co_qualname", code.co_name), how)

    def report(self) -> dict:
        return {
            "pid": os.getpid(),
            "t0": self.t0,
            "last": self.last_ns,
            "ended_by": self.ended_by,
            "threads": {str(tid): name for tid, name in dict(self._threads).items()},
            "records": [{"thread": str(tid), "module": module, "t": t, "seq": seq, "function": function, "how": how}
                        for (tid, module), (t, seq, function, how) in dict(self._first).items()],
        }


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


# ----- the worker's side (run from the sitecustomize) -------------------------------------------------

def worker_hook() -> None:
    """Installed in every interpreter that inherits the environment; acts only in the web process's
    ``engine.worker`` children."""
    where = os.environ.get(ENV_DIR)
    if not where or "engine.worker" not in getattr(sys, "orig_argv", ()) \
            or os.environ.get(ENV_PARENT) != str(os.getppid()):
        return
    where = Path(where)
    main_ident = threading.main_thread().ident
    recorder = Recorder(opener=main_ident)

    def on_arm(signum, frame) -> None:  # in the main thread: only it can trace itself
        sys.settrace(recorder.trace)
        recorder.arm()
        _write_json(where / f"{ARMED}-{os.getpid()}", {"pid": os.getpid()})

    def helper() -> None:
        while not (where / ARM).exists():
            time.sleep(POLL_S)
        # The main thread waits in the pipe's recv: a signal aimed at it runs the handler there.
        signal.pthread_kill(main_ident, signal.SIGUSR1)
        while not (where / DUMP).exists():
            time.sleep(POLL_S)
        # The web process has its answer; the model thread may still be ending the request's turn.
        recorder.closing = True
        deadline = time.monotonic() + DUMP_WAIT_S
        while recorder.state == recorder.RECORDING and time.monotonic() < deadline \
                and time.monotonic_ns() - recorder.last_ns < QUIET_S * 1e9:
            time.sleep(POLL_S)
        if recorder.state == recorder.ARMED:
            recorder.stop("the request never reached the worker")
        recorder.stop("a pause" if time.monotonic() < deadline else f"no pause within {DUMP_WAIT_S:g} s")
        _write_json(where / f"trace-{os.getpid()}.json", recorder.report())

    signal.signal(signal.SIGUSR1, on_arm)
    thread = threading.Thread(target=helper, name="request-path-helper", daemon=True)
    thread.start()
    recorder.ignored.add(thread.ident)
    threading.settrace(recorder.trace)


# ----- the web process's side ---------------------------------------------------------------------

def _wait_for(path: Path, timeout: float, what: str, alive=lambda: True) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or not alive():
            raise RuntimeError(f"no {what} from the worker after {timeout:.0f} s ({path} missing)")
        time.sleep(POLL_S)
    return path


def build_fixture(out: Path, backend: str) -> Path:
    """The tiny Qwen2 test model (``tests.tiny_model``; and its GGUF for llamacpp), in a subprocess."""
    code = ("import sys; from pathlib import Path; from tests.tiny_model import build_tiny_model; "
            "out = Path(sys.argv[1]); build_tiny_model(out, seed=0)")
    if backend == "llamacpp":
        code += "; from tests.tiny_gguf import build_tiny_gguf; build_tiny_gguf(out, out / 'tiny-qwen2.gguf')"
    subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def _modules(report: dict, keep) -> tuple[list[dict], dict[str, list[str]]]:
    """Per module, its first call on a kept thread (in order); and per other thread, what it ran."""
    names = report["threads"]
    first: dict[str, dict] = {}
    excluded: dict[str, set] = {}
    for rec in report["records"]:
        thread = names.get(rec["thread"], rec["thread"])
        if not keep(rec["thread"], thread):
            excluded.setdefault(thread, set()).add(rec["module"])
            continue
        row = {**rec, "thread": thread}
        earlier = first.get(rec["module"])
        if earlier is None or (rec["t"], rec["seq"]) < (earlier["t"], earlier["seq"]):
            first[rec["module"]] = {**row, "threads": (earlier or {}).get("threads", [])}
        if thread not in first[rec["module"]]["threads"]:
            first[rec["module"]]["threads"].append(thread)
    rows = sorted(first.values(), key=lambda r: (r["t"], r["seq"]))
    return rows, {thread: sorted(mods) for thread, mods in excluded.items()}


def measure(args) -> dict:
    sys.path.insert(0, str(REPO))
    from loguru import logger

    logger.remove()  # the worker's log lines come through this process's logger
    logger.add(sys.stderr, level="INFO" if args.verbose else "WARNING")

    with tempfile.TemporaryDirectory(prefix="request-path-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model_dir).resolve() if args.model_dir else build_fixture(
            tmp / "models" / "tiny-qwen2@test", args.backend)
        trace_dir = tmp / "trace"
        trace_dir.mkdir()
        (trace_dir / "sitecustomize.py").write_text(SITECUSTOMIZE.format(bench=str(Path(__file__).resolve())),
                                                     encoding="utf-8")
        # WorkerProcess.start hands the child os.environ with the repository put before this PYTHONPATH.
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(trace_dir), os.environ.get("PYTHONPATH")) if p)
        os.environ[ENV_DIR], os.environ[ENV_PARENT] = str(trace_dir), str(os.getpid())

        recorder = Recorder()
        threading.settrace(recorder.trace)  # every thread started from here on (the pipe's, the flows')

        # The parts as app.py imports them (so a module moved behind app.py's imports needs no edit here).
        from app import (DEFAULT_TASKS_FILE, ModelService, ModelSource, RequestLimits, RuntimeTasks, Timeline,
                         WebParts, load_config, load_tasks, make_worker_starter)
        from ui.demo import build_demo
        from ui.status_tab import StatusSource

        # As app.main, with no ALLINONE_* from this shell; its own data and log directories.
        config = load_config(["--model-dir", str(model_dir), "--backend", args.backend, "--precision", args.precision,
                              "--data-dir", str(tmp / "data"), "--log-dir", str(tmp / "logs")], environ={})
        runtime_tasks = RuntimeTasks(load_tasks(config.tasks_file or DEFAULT_TASKS_FILE), config.data_dir)
        limits = RequestLimits(config.max_message_chars, config.max_history_messages, config.max_history_chars,
                               config.max_lines)
        # The self-test is the service's basic one: the shipped probes' known answers are the real model's.
        service = ModelService(runtime_tasks.registry(), make_worker_starter(config, runtime_tasks.registry),
                               source=ModelSource(config.resolved_model_dir), ready_wait_s=config.ready_wait_s,
                               limits=limits, failures_before_reload=config.failures_before_reload)
        service.lifecycle.start()
        try:
            timeline = Timeline()
            parts = WebParts(config, service, timeline, runtime_tasks)
            snapshot = lambda: service.readiness.snapshot().to_json()  # noqa: E731
            demo = build_demo(parts.inference, snapshot=snapshot, classify_concurrency=config.max_batch,
                              chat_concurrency=config.max_active_chats, limits=service.limits,
                              status=StatusSource(snapshot, service.readiness.events.recent, timeline.latency_rows,
                                                  timeline.memory_rows),
                              drills=parts.admin)
            if args.door == "tab":
                fn = next((f for f in demo.fns.values() if f.name == "analyze" and f.concurrency_id == args.task), None)
            else:
                fn = next((f for f in demo.fns.values() if f.name == args.task and f.api_name == args.task), None)
            if fn is None:
                raise SystemExit(f"no {args.door} handler for the task {args.task!r} in the UI; its events: "
                                 f"{sorted({f.name for f in demo.fns.values() if f.concurrency_id == args.task})}")
            notes = []
            if not service.readiness.wait_ready(args.ready_timeout_s):
                raise RuntimeError(f"the model did not come into service: {service.readiness.snapshot().to_json()}")
            worker = service.supervisor.serving
            time.sleep(args.settle_s)  # the worker's first idle turns after its self-test (own weights swapped)

            # Arm the worker, then this process, then the one request.
            (trace_dir / ARM).touch()
            _wait_for(trace_dir / f"{ARMED}-{worker.pid}", 10.0, "arming", worker.alive)
            inputs = (args.text, args.mode, "") if args.door == "tab" else (args.text, args.mode)
            recorder.arm()
            sys.settrace(recorder.trace)
            started = time.monotonic_ns()
            try:
                if args.door == "api":  # as Gradio's queue does before the job: the event's validator first
                    verdicts = fn.validator(*inputs) if fn.validator is not None else ()
                    for verdict in verdicts if isinstance(verdicts, tuple) else (verdicts,):
                        if isinstance(verdict, dict) and verdict.get("is_valid") is False:
                            raise SystemExit(f"refused by the validator: {verdict}")
                output = fn.fn(*inputs)
            finally:
                sys.settrace(None)
                returned = time.monotonic_ns()
                time.sleep(args.settle_s)  # the reader's bookkeeping, the model thread's end of turn
                recorder.stop()
                (trace_dir / DUMP).touch()
            worker_report = json.loads(_wait_for(trace_dir / f"trace-{worker.pid}.json", 10.0, "trace",
                                                 worker.alive).read_text(encoding="utf-8"))
            pipe_threads = (f"worker-{worker.pid}-reader", f"worker-{worker.pid}-writer")
        finally:
            service.lifecycle.close()
            threading.settrace(None)

    main_ident = str(threading.main_thread().ident)
    web_rows, web_excluded = _modules(recorder.report(), lambda tid, name: tid == main_ident or name in pipe_threads)
    worker_rows, worker_excluded = _modules(
        worker_report, lambda tid, name: any(name == w or (w.endswith("[") and name.startswith(w))
                                             for w in WORKER_THREADS))
    path: dict[str, dict] = {}
    for row in sorted([{**r, "process": "web"} for r in web_rows] + [{**r, "process": "worker"} for r in worker_rows],
                      key=lambda r: (r["t"], r["seq"])):
        path.setdefault(row["module"], row)

    def shown(rows):
        return [{"module": r["module"], "function": r["function"], "thread": r["thread"], "how": r["how"],
                 "ms": round((r["t"] - started) / 1e6, 3), "threads": sorted(r["threads"]),
                 **({"process": r["process"]} if "process" in r else {})}
                for r in rows]

    both = sorted({r["module"] for r in web_rows} & {r["module"] for r in worker_rows})
    # The target's span, "from the Gradio handler to the backend": up to the first call into the backend
    # (engine/backends/, and engine/label_scoring.py, which both runtimes' classifiers share); the rest is the
    # backend's own inside, the engine's next turn and the way back (logging the request).
    ordered = list(path.values())
    entry = next((i for i, r in enumerate(ordered) if r["module"].startswith(BACKEND_MODULES)), len(ordered) - 1)
    return {
        "task": args.task, "text": args.text, "door": args.door, "mode": args.mode,
        "model": str(model_dir) if args.model_dir else "tiny Qwen2 test model (tests.tiny_model)",
        "backend": worker.backend, "precision": worker.precision,
        "answer": _answer(output),
        "handler_ms": round((returned - started) / 1e6, 1),
        "web": {"pid": os.getpid(), "modules": shown(web_rows), "excluded_threads": web_excluded},
        "worker": {"pid": worker_report["pid"], "modules": shown(worker_rows), "excluded_threads": worker_excluded,
                   "window_opened_ms": round((worker_report["t0"] - started) / 1e6, 3)
                   if worker_report["t0"] else None,
                   "last_call_ms": round((worker_report["last"] - started) / 1e6, 3) if worker_report["t0"] else None,
                   "window_closed_by": worker_report["ended_by"]},
        "path": shown(path.values()),
        "in_both": both,
        "notes": notes,
        "count": len(path),
        "count_to_backend": entry + 1,
        "target": TARGET,
        "excluded": [
            "startup of both processes: imports, the model's load and warm-up, the self-test (nothing is "
            "recorded before the model is in service and the request is sent)",
            "web process: threads other than the calling one and the serving worker's pipe reader/writer; "
            "the watchdog (vitals and self-test jobs) and the warm spare are not started, no HTTP server",
            "worker process: everything before its main thread received the request (idle loop turns), threads "
            "other than main, worker-outbox and model-worker[...] (e.g. own-weights), and the tracing helper",
            f"after the handler returned: the web process records {args.settle_s:g} s more (the reader's "
            f"bookkeeping); the worker until its first pause of {QUIET_S:g} s (the end of the request's turn: an "
            "idle turn comes 0.5 s after it), and nothing after that pause",
        ],
    }


def _answer(output) -> object:
    """The label the handler answered (the tab's ``gr.Label`` update, or the API's dict)."""
    try:
        if isinstance(output, dict) and "label" in output:
            return output["label"]
        scores = output[0]["value"]
        return max(scores, key=scores.get)
    except (TypeError, KeyError, IndexError, ValueError):
        return repr(output)[:200]


def print_text(result: dict) -> None:
    print(f"# One {result['task']} request ({result['text']!r}, door {result['door']}, mode {result['mode']}) on "
          f"{result['model']}; backend {result['backend'][0]}, {result['precision'][0]}")
    print(f"answer: {result['answer']} in {result['handler_ms']} ms (traced, so slower than untraced)")
    for process in ("web", "worker"):
        part = result[process]
        opened = (f"; window opened at +{part['window_opened_ms']} ms, last call +{part['last_call_ms']} ms, "
                  f"closed by {part['window_closed_by']}" if part.get("window_opened_ms") is not None else "")
        print(f"\n{process} process (pid {part['pid']}): {len(part['modules'])} modules, "
              f"in order of first call{opened}")
        for i, row in enumerate(part["modules"], 1):
            print(f"  {i:2d}  {row['module']:40s} {row['function']:44s} {row['thread']:28s} "
                  f"{row['how']:8s} +{row['ms']:.3f} ms")
        for thread, modules in part["excluded_threads"].items():
            print(f"  excluded: thread {thread}: {', '.join(modules)}")
    over = result["count"] - result["target"]
    print(f"\nthe path, both processes merged: {result['count']} distinct project modules "
          f"(target at most {result['target']}: {'met' if over <= 0 else f'over by {over}'})")
    for i, row in enumerate(result["path"], 1):
        print(f"  {i:2d}  {row['process']:6s} {row['module']}")
        if i == result["count_to_backend"]:
            print("      ---- the backend reached: the modules above are the target's span")
    over = result["count_to_backend"] - result["target"]
    print(f"from the handler to the backend: {result['count_to_backend']} modules "
          f"(target at most {result['target']}: {'met' if over <= 0 else f'over by {over}'})")
    if result["in_both"]:
        print(f"in both processes: {', '.join(result['in_both'])}")
    for note in result["notes"]:
        print(f"note: {note}")
    print("\nnot counted:")
    for note in result["excluded"]:
        print(f"  - {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="sentiment", help="a classify task (default sentiment)")
    parser.add_argument("--text", default="I love it")
    parser.add_argument("--mode", default="auto", choices=("auto", "prompt", "head"))
    parser.add_argument("--door", default="tab", choices=("tab", "api"),
                        help="tab: the tab's Analyze handler (default); api: the /<task> API function")
    parser.add_argument("--model-dir", help="serve this model directory instead of building the tiny test model")
    parser.add_argument("--backend", default="torch", choices=("torch", "llamacpp", "auto"))
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "int8"),
                        help="weight format (default fp32 on torch, as the tests; auto on llamacpp: the GGUF's own)")
    parser.add_argument("--settle-s", type=float, default=0.2,
                        help="wait after the model is in service and after the handler returns (default 0.2; "
                             "below the engine's 0.5 s idle poll)")
    parser.add_argument("--ready-timeout-s", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="machine output on stdout")
    parser.add_argument("--verbose", action="store_true", help="the app's INFO log lines on stderr")
    args = parser.parse_args(argv)
    if args.precision is None:
        args.precision = "fp32" if args.backend == "torch" else "auto"
    result = measure(args)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

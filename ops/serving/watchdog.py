"""The watchdog: notices when the service stops giving right answers and brings it back.

Two APScheduler jobs: ``vitals`` (every 2 s, no model work) and ``self_test`` (every 15 s, the
known-answer probes in ``ops/serving/probes.toml`` unless real traffic succeeded). ``decide`` holds the
rules as a pure function returning a typed ``Decision``. What each job checks and does:
docs/internals.md, "The watchdog".
"""

from __future__ import annotations

import threading
import time
import tomllib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Protocol

from loguru import logger

from engine.errors import AllInOneError, ConfigError, SelfTestFailed
from engine.tasks import TaskRegistry
from engine.types import GenerateOptions, Inference, TaskKind
from ops.common.proc import process_rss_bytes
from ops.serving.disk import ServingFiles
from ops.serving.history import Timeline
from ops.serving.lifecycle import Lifecycle
from ops.serving.readiness import Readiness, RecoveryCause
from ops.serving.recovery import Recovery
from ops.serving.spare import WarmSpare
from ops.serving.supervisor import WorkerSupervisor

__all__ = ["Probes", "LiveProbes", "load_probes", "WatchdogConfig", "Vitals", "Action", "Decision", "decide", "Watchdog",
           "WatchedService", "DEFAULT_PROBES_FILE"]

DEFAULT_PROBES_FILE = Path(__file__).with_name("probes.toml")


@dataclass(frozen=True)
class Probes:
    classify: tuple[tuple[str, str, str], ...]  # (task, text, expected label)
    generate: tuple[tuple[str, str, int], ...]  # (task, message, max_new_tokens)

    def run(self, engine: Inference) -> str:
        """Raise ``SelfTestFailed`` on the first wrong answer; return a summary. A task's
        probes go in one request (one batch), so a self-test costs one forward pass per task."""
        by_task: dict[str, list[tuple[str, str]]] = {}
        for task, text, expected in self.classify:
            by_task.setdefault(task, []).append((text, expected))
        for task, cases in by_task.items():
            results = engine.classify(task, [text for text, _ in cases])
            if len(results) != len(cases):
                raise SelfTestFailed(f"self-test failed: {task} gave {len(results)} answers for {len(cases)} texts")
            for (text, expected), result in zip(cases, results):
                if result.label != expected:
                    raise SelfTestFailed(f"self-test failed: {task}({text[:30]!r}) gave {result.label}, "
                                         f"expected {expected}")
        for task, message, max_new_tokens in self.generate:
            last = None
            # priority: a probe never waits behind a full classroom's chats (see engine.engine)
            options = GenerateOptions(max_new_tokens=max_new_tokens, priority=True)
            for last in engine.generate(task, message, options=options):
                pass
            if last is None or not last.done:
                raise SelfTestFailed(f"self-test failed: {task} did not finish")
        return f"{len(self.classify)} classify + {len(self.generate)} generate probes passed"


@dataclass(frozen=True)
class LiveProbes:
    """The probes file's probes plus the known answers the served tasks carry (a classify task's
    ``probes``), read at each run: a task added at run time is watched from its first self-test."""

    base: Probes
    tasks: Callable[[], TaskRegistry]

    def run(self, engine: Inference) -> str:
        served = self.tasks()
        extra = tuple((task.name, probe.text, probe.label) for task in served.of_kind(TaskKind.CLASSIFY)
                      for probe in task.probes)
        return Probes(self.base.classify + extra, self.base.generate).run(engine)


def load_probes(path: Path = DEFAULT_PROBES_FILE) -> Probes:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        classify = tuple((p["task"], p["text"], p["label"]) for p in data.get("classify", []))
        generate = tuple((p["task"], p["message"], int(p.get("max_new_tokens", 2))) for p in data.get("generate", []))
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"Cannot read the probes file {path}: {exc}") from exc
    if not classify and not generate:
        raise ConfigError(f"{path} defines no probes.")
    return Probes(classify, generate)


@dataclass(frozen=True)
class WatchdogConfig:
    interval_s: float = 15.0
    vitals_interval_s: float = 2.0
    hang_limit_s: float = 10.0
    probe_timeout_s: float = 20.0
    memory_limit_bytes: int | None = None


@dataclass(frozen=True)
class Vitals:
    ready: bool
    stuck_for_s: float
    rss_bytes: int  # the worker process's: the memory a recovery can free
    seconds_since_success: float | None
    files_changed: bool = False
    damaged: str | None = None  # the serving store version no longer matches its MANIFEST
    switched_to: str | None = None  # the store link names another version
    worker_alive: bool = True  # False: the serving worker's process has ended
    web_rss_bytes: int = 0  # this (web) process's, for the Status tab


class Action(str, Enum):
    SKIP = "skip"  # not ready: a load or recovery is in charge
    OK = "ok"
    PROBE = "probe"  # run the known-answer probes
    RECOVER = "recover"  # replace the worker
    RESTORE = "restore"  # the serving version is damaged: back to a verified good one
    SWITCH = "switch"  # load the version the store link names


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None
    cause: RecoveryCause | None = None  # for RECOVER


def decide(vitals: Vitals, config: WatchdogConfig, probe_due: bool) -> Decision:
    """What to do about these vitals; the rules, first match wins."""
    if not vitals.ready:
        return Decision(Action.SKIP)
    if not vitals.worker_alive:
        return Decision(Action.RECOVER, "the model's worker process ended", RecoveryCause.WORKER_EXIT)
    if vitals.stuck_for_s > config.hang_limit_s:
        return Decision(Action.RECOVER, f"an inference hung for {vitals.stuck_for_s:.0f} s "
                        f"(limit {config.hang_limit_s:.0f} s)", RecoveryCause.HANG)
    if config.memory_limit_bytes is not None and vitals.rss_bytes > config.memory_limit_bytes:
        return Decision(Action.RECOVER, f"worker memory {vitals.rss_bytes / 2**20:.0f} MiB is over the limit of "
                        f"{config.memory_limit_bytes / 2**20:.0f} MiB", RecoveryCause.MEMORY)
    if vitals.damaged:
        return Decision(Action.RESTORE, f"the serving model's files do not match their MANIFEST: {vitals.damaged}")
    if vitals.files_changed:
        return Decision(Action.RECOVER, "the model files changed on disk", RecoveryCause.FILES)
    if vitals.switched_to:
        return Decision(Action.SWITCH, f"the model link now names {vitals.switched_to}")
    if not probe_due:
        return Decision(Action.OK)
    if vitals.seconds_since_success is not None and vitals.seconds_since_success < config.interval_s:
        return Decision(Action.OK, "recent traffic succeeded")
    return Decision(Action.PROBE)


class WatchedService(Inference, Protocol):
    """What the watchdog reads and asks of (``ops.serving.service.ModelService``): each part for its own job.
    The probes go through the service itself, as any request does."""

    readiness: Readiness  # is it ready; the self-tests' results
    supervisor: WorkerSupervisor  # the serving worker's vitals
    disk: ServingFiles  # the serving version's files
    lifecycle: Lifecycle  # load the version the link names; restore a damaged one
    recovery: Recovery  # replace a sick worker
    spare: WarmSpare | None  # tended on every vitals check

    def seconds_since_success(self) -> float | None: ...


class Watchdog:
    def __init__(self, service: WatchedService, probes: Probes, config: WatchdogConfig = WatchdogConfig(),
                 rss: Callable[[], int] = process_rss_bytes, timeline: Timeline | None = None) -> None:
        self.service = service
        self.timeline = timeline  # the vitals job also samples memory for the Status tab's plot
        self.probes = probes
        self.config = config
        self._rss = rss
        self._scheduler = None
        self._probe_thread: threading.Thread | None = None

    def vitals(self) -> Vitals:
        service, workers = self.service, self.service.supervisor
        disk = service.disk.check()
        return Vitals(
            ready=service.readiness.snapshot().ready,
            stuck_for_s=workers.stuck_for(),
            rss_bytes=workers.worker_rss_bytes(),
            seconds_since_success=service.seconds_since_success(),
            files_changed=disk.files_changed,
            damaged=disk.damaged,
            switched_to=disk.switched_to,
            worker_alive=workers.worker_alive(),
            web_rss_bytes=self._rss(),
        )

    def _act(self, decision: Decision) -> None:
        if decision.action is Action.RECOVER:
            self.service.recovery.recover(decision.cause, decision.reason)
        elif decision.action is Action.RESTORE:
            self.service.lifecycle.replace_damaged(decision.reason)
        elif decision.action is Action.SWITCH:
            self.service.lifecycle.reload(decision.reason, operator=False)

    def check_vitals(self) -> Action:
        vitals = self.vitals()
        if self.timeline is not None:
            self.timeline.observe_memory(web=vitals.web_rss_bytes, worker=vitals.rss_bytes)
        decision = decide(vitals, self.config, probe_due=False)
        self._act(decision)
        if self.service.spare is not None:  # one that died while parked is replaced
            self.service.spare.tend()
        return decision.action

    def run_self_test(self) -> Action:
        decision = decide(self.vitals(), self.config, probe_due=True)
        self._act(decision)
        if decision.action is Action.PROBE:
            reason = self._probe()
            if reason is not None:
                self.service.recovery.recover(RecoveryCause.SELF_TEST, reason)
                return Action.RECOVER
        return decision.action

    def _probe(self) -> str | None:
        """Run the probes with a time limit; record the result; return a failure reason.

        A probe past its limit while the engine's worker is stuck is a hang: recover
        at once. Past its limit with the worker making progress (its loop turning, or
        its step computing: ``stuck_for``), the machine is overloaded or the queue
        long, not the model sick: reloading would only add load and kill the work in
        flight, so it is recorded and never recovered from, however often it happens.
        A step that computes for ever is a hang all the same: ``stuck_for`` stops
        counting CPU use as life after ``MAX_STEP_S``. Probes that failed on a worker
        replaced meanwhile (a recovery, a reload) say nothing of the one serving now.
        """
        if self._probe_thread is not None and self._probe_thread.is_alive():
            return None  # the last slow probe is still running: do not pile up another
        outcome: dict = {}
        readiness = self.service.readiness
        probed = self.service.supervisor.serving  # the worker these probes are about

        def target() -> None:
            try:
                outcome["detail"] = self.probes.run(self.service)
            except Exception as exc:  # a wrong answer, a timeout, NaN: all are findings
                outcome["error"] = exc.user_message if isinstance(exc, AllInOneError) else repr(exc)

        started = time.monotonic()
        runner = threading.Thread(target=target, name="self-test", daemon=True)
        runner.start()
        runner.join(self.config.probe_timeout_s)
        slow = runner.is_alive()
        if slow:
            self._probe_thread = runner
            outcome["error"] = f"self-test took longer than {self.config.probe_timeout_s:.0f} s"
            if self.service.supervisor.stuck_for() <= self.config.hang_limit_s:
                detail = f"{outcome['error']}; the worker is not stuck, so the machine is overloaded: not reloading"
                readiness.record_self_test(False, time.monotonic() - started, detail)
                logger.warning("watchdog: {}", detail)
                return None
        if "error" in outcome and self.service.supervisor.serving is not probed:
            # Its end (killed, timed out) failed the probes; the next probe tests the one serving now.
            logger.warning("watchdog: {} (on a worker no longer serving: not acted on)", outcome["error"])
            return None
        passed = "error" not in outcome
        readiness.record_self_test(passed, time.monotonic() - started, outcome.get("detail") or outcome["error"])
        if not passed:
            logger.error("watchdog: {}", outcome["error"])
        return None if passed else outcome["error"]

    def start(self) -> "Watchdog":
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(daemon=True)
        self._scheduler.add_job(self.check_vitals, "interval", seconds=self.config.vitals_interval_s,
                                id="vitals", max_instances=1, coalesce=True)
        self._scheduler.add_job(self.run_self_test, "interval", seconds=self.config.interval_s,
                                id="self_test", max_instances=1, coalesce=True)
        self._scheduler.start()
        return self

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

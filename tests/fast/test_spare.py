"""The warm spare worker (``--spare-worker``): a recovery switches to it, and a fresh one warms behind it.

Fake workers (no model, no process); the real-process drills are in test_hardening_live."""

from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Iterator

from engine.errors import SelfTestFailed
from engine.tasks import load_tasks
from ops.serving import spare as spare_module
from ops.serving.readiness import RecoveryCause, State
from ops.serving.service import ModelService
from ops.serving.spare import WarmSpare
from ops.serving.watchdog import Watchdog, WatchdogConfig, load_probes
from tests.fakes import FakeWorker, running, wait_for

PIDS = itertools.count(1000)


class Worker(FakeWorker):
    def __init__(self, path=None):
        super().__init__(path)
        self.model_path = path
        self.pid = next(PIDS)


class Starts:
    """``start_worker``: records each worker it starts, for which version."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, target=None):
        self.gate.wait(10)
        self.workers.append(Worker(target))
        return self.workers[-1]


@contextlib.contextmanager
def spare_service(starts: Starts, self_test=lambda worker: "ok") -> Iterator[ModelService]:
    """A service with ``--spare-worker``, ready and with its spare parked; closed when the block ends."""
    service = running(ModelService(load_tasks(), starts, self_test=self_test, spare_worker=True, max_backoff_s=0.05))
    try:
        assert service.readiness.wait_ready(5) and wait_for(lambda: service.spare.parked is not None)
        yield service
    finally:
        starts.gate.set()  # a test that held worker starts back must not leave close() waiting for one
        service.lifecycle.close()


def test_a_spare_is_warmed_after_the_first_load_and_shown_on_ready():
    starts = Starts()
    with spare_service(starts) as service:
        serving, parked = service.supervisor.serving, service.spare.parked
        assert parked is not serving and len(starts.workers) == 2
        assert service.readiness.snapshot().to_json()["spare_pid"] == parked.pid
    assert all(worker.killed or worker.closed for worker in starts.workers)


def test_without_the_flag_there_is_no_spare():
    starts = Starts()
    service = running(ModelService(load_tasks(), starts))
    try:
        assert service.readiness.wait_ready(5)
        Watchdog(service, load_probes(), WatchdogConfig(), rss=lambda: 1).check_vitals()  # tends a spare, if any
        assert service.spare is None and len(starts.workers) == 1
        assert service.readiness.snapshot().to_json()["spare_pid"] is None
    finally:
        service.lifecycle.close()


def test_a_recovery_switches_to_the_spare_without_loading_and_warms_a_new_one():
    starts = Starts()
    with spare_service(starts) as service:
        first, spare = service.supervisor.serving, service.spare.parked
        starts.gate.clear()  # no worker may start until the switch is done: the switch must not need one
        assert service.recovery.recover(RecoveryCause.HANG, "drill")
        assert wait_for(lambda: service.readiness.snapshot().ready)
        assert service.supervisor.serving is spare
        assert wait_for(lambda: first.killed)
        assert service.classify("sentiment", ["hi"])[0].label == "positive"
        events = lambda: [(event["kind"], event["ok"]) for event in service.readiness.events.recent()]  # noqa: E731
        assert wait_for(lambda: ("recovered", True) in events()) and ("spare", True) in events()
        starts.gate.set()  # the fresh spare warms behind the switch
        assert wait_for(lambda: service.spare.parked is not None and service.spare.parked is not spare)
        assert len(starts.workers) == 3


def test_changed_files_are_loaded_afresh_not_taken_from_the_spare():
    starts = Starts()
    with spare_service(starts) as service:
        spare = service.spare.parked
        assert service.recovery.recover(RecoveryCause.FILES, "the model files changed on disk")
        assert wait_for(lambda: service.readiness.snapshot().ready and service.supervisor.serving is not None)
        assert service.supervisor.serving is not spare and service.supervisor.serving is starts.workers[2]


def test_a_spare_that_fails_its_self_test_at_the_switch_is_killed_and_a_fresh_worker_loads():
    starts = Starts()
    bad: set[int] = set()

    def self_test(worker):
        if worker.pid in bad:
            raise SelfTestFailed("self-test failed: wrong answer")
        return "ok"

    with spare_service(starts, self_test=self_test) as service:
        spare = service.spare.parked
        bad.add(spare.pid)  # went bad while parked
        assert service.recovery.recover(RecoveryCause.INVALID_OUTPUT, "NaN")
        assert wait_for(lambda: service.readiness.snapshot().ready and service.supervisor.serving not in (None, spare))
        assert spare.killed
        assert wait_for(lambda: ("spare", False) in [(event["kind"], event["ok"]) for event in service.readiness.events.recent()])


def test_a_hot_swap_frees_the_spare_first_and_the_new_version_gets_its_own(tmp_path):
    old, new = tmp_path / "m@1", tmp_path / "m@2"
    target = [old]
    starts = Starts()
    service = ModelService(load_tasks(), starts, spare_worker=True)
    service.follower.target = lambda: target[0]
    service.lifecycle.start()
    try:
        assert service.readiness.wait_ready(5) and wait_for(lambda: service.spare.parked is not None)
        old_spare = service.spare.parked
        target[0] = new
        assert service.lifecycle.reload("activate", operator=True)
        assert wait_for(lambda: service.supervisor.serving.model_path == new)
        assert old_spare.killed
        assert wait_for(lambda: service.spare.parked is not None and service.spare.parked.model_path == new)
        assert service.readiness.snapshot().state is State.READY
    finally:
        service.lifecycle.close()


def test_a_parked_spare_that_dies_is_replaced_and_a_failed_warm_up_is_retried_later(monkeypatch):
    attempts = []

    def start(target=None):
        attempts.append(target)
        if len(attempts) == 2:
            raise RuntimeError("no memory")
        return Worker(target)

    spare = WarmSpare(start, lambda worker: "ok")
    spare.refill(None)
    assert wait_for(lambda: len(attempts) == 1 and spare.parked is not None)
    spare.parked.closed = True  # its process ended
    spare.tend()
    assert wait_for(lambda: len(attempts) == 2)  # the new warm-up fails
    spare.tend()
    assert len(attempts) == 2  # not retried before RETRY_AFTER_S
    monkeypatch.setattr(spare_module, "RETRY_AFTER_S", 0.0)
    assert wait_for(lambda: (spare.tend(), spare.parked is not None)[1])
    assert len(attempts) == 3
    taken = spare.take(None)
    assert taken is not None and spare.parked is None and spare.take(None) is None
    spare.close()


def test_take_refuses_a_spare_of_another_version(tmp_path):
    spare = WarmSpare(Worker, lambda worker: "ok")
    spare.refill(tmp_path / "a")
    assert wait_for(lambda: spare.parked is not None)
    assert spare.take(tmp_path / "b") is None and spare.parked is not None
    parked = spare.parked
    spare.discard()
    assert parked.killed and spare.parked is None


def test_a_task_change_warms_a_new_spare_with_the_new_tasks():
    starts = Starts()
    with spare_service(starts) as service:
        old = service.spare.parked
        service.update_tasks(load_tasks())
        assert wait_for(lambda: service.spare.parked not in (None, old)) and old.killed

"""Operator actions, behind a bearer token: over HTTP and from the Status tab.

The ``/admin`` routes: reload, the runtime tasks (``ops.api.runtime_tasks``) and teaching them
(``ops.api.teach``), and fault drills (only with ``--fault-injection``). No token configured: 403;
a wrong one: 401, throttled per address (429). ``AdminActions`` holds the rules once for the routes
and the Status tab's buttons. The routes in full: docs/internals.md, "HTTP APIs".
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections import deque
from typing import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.concurrency import run_in_threadpool

from engine.errors import AllInOneError, ConfigError, InvalidInput, ModelUnavailable
from engine.types import Fault
from ops.api.runtime_tasks import RuntimeTasks, TaskConflict, TaskNotFound
from ops.api.teach import FitBusy, Teacher
from ops.api.teach_examples import MAX_EXAMPLES_BYTES, ExamplesTooLarge
from ops.serving.body_limit import RouteLimit
from ops.serving.service import ModelService

__all__ = ["AdminActions", "AdminDenied", "add_admin_routes", "body_limits", "FAULT_KINDS", "WrongTokenThrottle"]

EXAMPLES_ROUTE = "/admin/tasks/{name}/examples"


FAULT_KINDS = tuple(kind.value for kind in Fault)
WRONG_TOKENS_PER_MINUTE = 5


class AdminDenied(Exception):
    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class WrongTokenThrottle:
    """Wrong admin tokens per client address over the last ``window_s`` (bounded memory)."""

    def __init__(self, limit: int = WRONG_TOKENS_PER_MINUTE, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 1024) -> None:
        self.limit, self.window_s, self._clock, self._max_clients = limit, window_s, clock, max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: it may now)."""
        now = self._clock()
        with self._lock:
            failures = self._recent(client, now)
            return failures[0] + self.window_s - now if len(failures) >= self.limit else 0.0

    def failed(self, client: str) -> int:
        """Record a wrong token; returns how many ``client`` sent within the window."""
        now = self._clock()
        with self._lock:
            if client not in self._failures and len(self._failures) >= self._max_clients:
                self._failures = {c: f for c, f in self._failures.items() if self._recent(c, now)}
            failures = self._recent(client, now)
            failures.append(now)
            return len(failures)


class AdminActions:
    def __init__(self, service: ModelService, admin_token: str | None, fault_injection: bool = False,
                 throttle: WrongTokenThrottle | None = None, tasks: RuntimeTasks | None = None) -> None:
        self.service = service
        self.tasks = tasks
        self.teacher = Teacher(service, tasks) if tasks is not None else None
        self._token = admin_token
        self.fault_injection = fault_injection
        self._throttle = throttle or WrongTokenThrottle()

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        return FAULT_KINDS if self.fault_injection else ()

    def authorize(self, token: str | None, client: str = "unknown") -> None:
        if not self._token:
            raise AdminDenied(403, "Admin actions are off: start the app with an admin token "
                                   "(ALLINONE_ADMIN_TOKEN or --admin-token-file).")
        wait = self._throttle.blocked_for(client)
        if wait > 0:
            raise AdminDenied(429, f"Too many wrong admin tokens from {client}; try again in {wait:.0f} s.",
                              retry_after_s=max(int(wait + 0.999), 1))
        if not token:  # no guess, nothing to throttle
            raise AdminDenied(401, "A valid admin token is required.")
        if not secrets.compare_digest(token.encode("utf-8", "surrogatepass"), self._token.encode()):
            count = self._throttle.failed(client)
            logger.warning("wrong admin token from {} ({} within a minute)", client, count)
            raise AdminDenied(401, "A valid admin token is required.")

    def allows(self, request: Request) -> bool:
        """Whether ``request`` carries the admin token (a wrong one counts as a guess)."""
        token = _bearer(request)
        if not token:
            return False
        try:
            self.authorize(token, client_address(request))
        except AdminDenied:
            return False
        return True

    def reload(self, token: str | None, client: str = "unknown") -> dict:
        self.authorize(token, client)
        started = self.service.lifecycle.reload("operator request")
        return {"reloading": started, "state": self.service.readiness.snapshot().state.value}

    def list_tasks(self, token: str | None, client: str = "unknown") -> dict:
        self.authorize(token, client)
        runtime = self.tasks.runtime_tables() if self.tasks is not None else {}
        return {"shipped": sorted(set(self.service.tasks.tasks) - set(runtime)), "runtime": runtime}

    def put_task(self, name: str, table: object, token: str | None, client: str = "unknown",
                 create_only: bool = False) -> dict:
        """Add (or with ``create_only`` False, replace) a runtime task; the old one serves until this succeeds."""
        self.authorize(token, client)
        tasks = _needed(self.tasks)
        if create_only and name in self.service.tasks.tasks:
            raise AdminDenied(409, f"Task {name!r} exists; PUT replaces it.")
        with _task_errors():
            change = tasks.put(name, table, self.service.update_tasks)
        logger.info("runtime task {} {}", name, change.value)
        self.service.readiness.events.add("task", True, f"{name} {change.value}")
        return {"task": name, "change": change.value}

    def remove_task(self, name: str, token: str | None, client: str = "unknown") -> dict:
        self.authorize(token, client)
        with _task_errors():
            change = _needed(self.tasks).remove(name, self.service.update_tasks)
        _needed(self.teacher).forget(name)
        logger.info("runtime task {} removed", name)
        self.service.readiness.events.add("task", True, f"{name} {change.value}")
        return {"task": name, "change": change.value}

    def get_task(self, name: str, token: str | None, client: str = "unknown") -> dict:
        self.authorize(token, client)
        with _task_errors():
            return _needed(self.teacher).describe(name)

    def put_examples(self, name: str, body: bytes, content_type: str | None, token: str | None,
                     client: str = "unknown") -> dict:
        """Teach a runtime classify task by example (``ops.api.teach``); the old examples stay on a refusal."""
        self.authorize(token, client)
        with _task_errors():
            answer = _needed(self.teacher).put_examples(name, body, content_type)
        self.service.readiness.events.add("task", True, f"{name}: {answer['examples']} examples")
        return answer

    def fit(self, name: str, token: str | None, client: str = "unknown") -> dict:
        """Start fitting the task's head in the background; progress in ``get_task``."""
        self.authorize(token, client)
        with _task_errors():
            answer = _needed(self.teacher).start_fit(name)
        self.service.readiness.events.add("task", True, f"{name}: fitting its head")
        return answer


    def fault(self, kind: str, token: str | None, client: str = "unknown") -> dict:
        self.authorize(token, client)
        if not self.fault_injection:
            raise AdminDenied(403, "Fault drills are off: start the app with --fault-injection.")
        if kind not in FAULT_KINDS:
            raise AdminDenied(404, f"Unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}.")
        logger.warning("fault drill: {}", kind)
        if kind == Fault.EXIT_APP:
            # Answer first, then leave the way a crash would: no cleanup, for the supervisor to handle.
            threading.Timer(0.2, os._exit, args=(1,)).start()
        else:
            self.service.inject_fault(Fault(kind))
        return {"injected": kind}


def body_limits(max_body_bytes: int) -> tuple[RouteLimit, ...]:
    """The admin routes whose body may be larger than ``--max-body-bytes`` (``ops.serving.body_limit.BodyLimit``): a
    task's examples, up to ``MAX_EXAMPLES_BYTES`` (the route refuses more itself, where the flag allows more)."""
    if max_body_bytes >= MAX_EXAMPLES_BYTES:
        return ()
    return (RouteLimit("PUT", EXAMPLES_ROUTE, MAX_EXAMPLES_BYTES, "a task's examples"),)


def _needed(part):
    """The runtime tasks or their teacher, which a server without a data dir for them does not have."""
    if part is None:
        raise AdminDenied(403, "Tasks cannot be changed at run time on this server.")
    return part


@contextlib.contextmanager
def _task_errors():
    """A task change's refusals, as the admin answers them (the old tasks keep serving)."""
    try:
        yield
    except TaskNotFound as exc:
        raise AdminDenied(404, str(exc)) from exc
    except (TaskConflict, FitBusy) as exc:
        raise AdminDenied(409, str(exc)) from exc
    except ExamplesTooLarge as exc:
        raise AdminDenied(413, str(exc)) from exc
    except (ConfigError, InvalidInput) as exc:
        raise AdminDenied(400, str(exc)) from exc
    except ModelUnavailable as exc:
        raise AdminDenied(503, str(exc)) from exc
    except AllInOneError as exc:
        raise AdminDenied(500, str(exc)) from exc


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def add_admin_routes(app: FastAPI, actions: AdminActions) -> None:
    def run(action, *args, status: int = 202) -> JSONResponse:
        try:
            return JSONResponse(action(*args), status_code=status)
        except AdminDenied as denied:
            if denied.status == 401:
                raise HTTPException(401, f"{denied.message} Send Authorization: Bearer <token>.",
                                    headers={"WWW-Authenticate": "Bearer"}) from None
            if denied.status == 429:
                raise HTTPException(429, denied.message, headers={"Retry-After": str(denied.retry_after_s)}) from None
            raise HTTPException(denied.status, denied.message) from None

    @app.post("/admin/reload", include_in_schema=False)
    def reload(request: Request) -> JSONResponse:
        return run(actions.reload, _bearer(request), client_address(request))

    async def table(request: Request) -> object:
        try:
            return await request.json()
        except ValueError:
            raise HTTPException(400, "The body must be the task's fields as a JSON object.") from None

    @app.get("/admin/tasks", include_in_schema=False)
    def list_tasks(request: Request) -> JSONResponse:
        return run(actions.list_tasks, _bearer(request), client_address(request), status=200)

    @app.post("/admin/tasks/{name}", include_in_schema=False)
    async def add_task(name: str, request: Request) -> JSONResponse:
        body = await table(request)
        return await run_in_threadpool(run, actions.put_task, name, body, _bearer(request), client_address(request),
                                       True, status=201)

    @app.put("/admin/tasks/{name}", include_in_schema=False)
    async def put_task(name: str, request: Request) -> JSONResponse:
        body = await table(request)
        return await run_in_threadpool(run, actions.put_task, name, body, _bearer(request), client_address(request),
                                       status=200)

    @app.get("/admin/tasks/{name}", include_in_schema=False)
    def get_task(name: str, request: Request) -> JSONResponse:
        return run(actions.get_task, name, _bearer(request), client_address(request), status=200)

    @app.put(EXAMPLES_ROUTE, include_in_schema=False)
    async def put_examples(name: str, request: Request) -> JSONResponse:
        body = await request.body()
        return await run_in_threadpool(run, actions.put_examples, name, body, request.headers.get("content-type"),
                                       _bearer(request), client_address(request), status=200)

    @app.post("/admin/tasks/{name}/fit", include_in_schema=False)
    def fit(name: str, request: Request) -> JSONResponse:
        return run(actions.fit, name, _bearer(request), client_address(request), status=202)

    @app.delete("/admin/tasks/{name}", include_in_schema=False)
    def remove_task(name: str, request: Request) -> JSONResponse:
        return run(actions.remove_task, name, _bearer(request), client_address(request), status=200)

    @app.post("/admin/fault/{kind}", include_in_schema=False)
    def fault(kind: str, request: Request) -> JSONResponse:
        return run(actions.fault, kind, _bearer(request), client_address(request))

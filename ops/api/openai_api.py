"""The OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``) and this project's ``/v1/classify``.

Every call takes the Gradio API's way (instrumented service, limits, readiness wait, the one queue);
only the shapes differ. Errors use OpenAI's shape (``ApiError``); who may call is ``ApiKeys``. The
fields and status codes: docs/internals.md, "HTTP APIs".
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from engine.errors import AllInOneError, Busy, InferenceTimeout, InvalidInput, ModelUnavailable
from engine.sampling import BREAK_GUARD, RepetitionGuard
from engine.chat import ChatUpdate
from engine.types import ClassifyMode, FINISH_STOP, GenerateOptions, Inference, TaskInfo, TaskKind

__all__ = ["ApiError", "ApiKeys", "StopText", "add_openai_routes", "chat_arguments", "repetition_guard"]

OWNER = "qwen-all-in-one"
MAX_STOPS = 4  # as OpenAI
BUSY_RETRY_S = 2
UNAVAILABLE_RETRY_S = 5
_ROLES = ("system", "user", "assistant")


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.retry_after_s = retry_after_s

    @classmethod
    def of(cls, exc: AllInOneError) -> "ApiError":
        """The HTTP answer to one of the engine's errors."""
        if isinstance(exc, InvalidInput):
            return cls(400, str(exc))
        if isinstance(exc, Busy):
            return cls(429, str(exc), "rate_limit_error", "busy", retry_after_s=BUSY_RETRY_S)
        if isinstance(exc, ModelUnavailable):
            return cls(503, str(exc), "server_error", "model_unavailable", retry_after_s=UNAVAILABLE_RETRY_S)
        if isinstance(exc, InferenceTimeout):
            return cls(504, str(exc), "server_error", "timeout")
        return cls(500, str(exc), "server_error", "inference_failed")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


@dataclass(frozen=True)
class ApiKeys:
    """Who may call ``/v1``: with ``--api-key`` (or ``ALLINONE_API_KEY``, ``--api-key-file``) every call
    needs ``Authorization: Bearer <key>``; without one, ``/v1`` is open on a local host and off (403) on a
    network host that asks users for ``--auth`` (a password-protected UI must not come with an open API)."""

    key: str | None
    off_reason: str | None = None  # set when the API is switched off

    def check(self, request: Request) -> None:
        if self.off_reason is not None:
            raise ApiError(403, self.off_reason, "permission_error", "api_off")
        if self.key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.", "authentication_error",
                           "missing_api_key")
        if not hmac.compare_digest(given.strip().encode(), self.key.encode()):
            raise ApiError(401, "Wrong API key.", "authentication_error", "invalid_api_key")


class StopText:
    """Cuts an answer at the first of its stop strings. Fed the whole text so far, it hands out only text
    that cannot be the start of a stop string, so a streamed answer never shows part of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.sent = 0
        self.stopped = False

    def feed(self, text: str, final: bool = False) -> str:
        """New text safe to send; sets ``stopped`` once a stop string appears (nothing after it is sent)."""
        if self.stopped:
            return ""
        hits = [i for i in (text.find(stop, max(self.sent - len(stop), 0)) for stop in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            end = min(hits)
        elif final:
            end = len(text)
        else:  # hold back the longest tail that begins a stop string
            hold = max((k for stop in self.stops for k in range(1, len(stop)) if text.endswith(stop[:k])), default=0)
            end = len(text) - hold
        new = text[self.sent:end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return new


def _body(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _content(message: dict, index: int) -> str:
    """A message's text: a string, or OpenAI's list of parts, of which only text parts are supported."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(
            p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of text parts.",
                   param=f"messages[{index}].content")


def _number(body: dict, name: str, kind: type, low: float, high: float) -> float | int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not (
            low <= value <= high):
        what = "a number" if kind is float else "an integer"
        raise ApiError(400, f"'{name}' must be {what} from {low} to {high}.", param=name)
    return value


def repetition_guard(body: dict) -> RepetitionGuard | None:
    """The repetition guard that ``frequency_penalty`` and ``presence_penalty`` ask for (None: the server's,
    ``--repetition-guard``). Each is checked as OpenAI checks it, a number from -2 to 2, but neither is a
    logit penalty here: the engine has no per-token penalty, only the guard (``engine.sampling``).

    - Above 0 (either one): the request asks for less repetition, so it gets the ``break`` guard, which
      bans the token that would go on with a loop (three times, then ends the answer), whatever the
      server's default. How far above 0 makes no difference.
    - 0 or absent: the server's default.
    - Below 0 (asking for more repetition): accepted, and the server's default; the guard never
      encourages a loop."""
    penalties = [_number(body, name, float, -2, 2) for name in ("frequency_penalty", "presence_penalty")]
    return BREAK_GUARD if any(p is not None and p > 0 for p in penalties) else None


@dataclass(frozen=True)
class ChatArguments:
    """A chat completion request, checked, in the engine's terms."""

    task: str
    message: str
    history: list[dict]
    options: GenerateOptions
    stops: list[str]
    stream: bool
    include_usage: bool


def chat_arguments(body: dict, generate_tasks: set[str]) -> ChatArguments:
    """Check a ``/v1/chat/completions`` body; ``ApiError`` names the field at fault."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: one of " + ", ".join(sorted(generate_tasks)) + ".", param="model")
    if model not in generate_tasks:
        raise ApiError(404, f"The model {model!r} does not exist; the models are: {', '.join(sorted(generate_tasks))}.",
                       code="model_not_found", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list.", param="messages")
    system, turns = [], []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES + ("developer",):
            raise ApiError(400, f"messages[{i}].role must be one of: system, user, assistant.",
                           param=f"messages[{i}].role")
        text = _content(message, i)
        if message["role"] in ("system", "developer"):
            system.append(text)
        else:
            turns.append({"role": message["role"], "content": text})
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's.", param="messages")
    if body.get("n", 1) != 1:
        raise ApiError(400, "Only n = 1 is supported.", param="n")
    if body.get("tools") or body.get("functions"):
        raise ApiError(400, "Tools and functions are not supported.", param="tools")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop' must be a string or a list of up to {MAX_STOPS} non-empty strings.", param="stop")
    max_tokens = _number(body, "max_completion_tokens", int, 1, 1 << 20)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int, 1, 1 << 20)
    temperature = _number(body, "temperature", float, 0, 2)
    seed = _number(body, "seed", int, -(1 << 63), (1 << 63) - 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    stream_options = body.get("stream_options") or {}
    options = GenerateOptions(max_new_tokens=max_tokens, temperature=temperature, seed=(seed or 0) & 0xFFFFFFFF,
                              system_prompt="\n\n".join(system) if system else None,
                              repetition=repetition_guard(body))
    return ChatArguments(model, turns[-1]["content"], turns[:-1], options, stops, stream,
                         bool(isinstance(stream_options, dict) and stream_options.get("include_usage")))


def _finish_reason(update: ChatUpdate, stopped: bool) -> str:
    if stopped or update.finish_reason == FINISH_STOP:
        return "stop"
    return "length"  # max_tokens, or the request's time limit: cut short either way


def _usage(update: ChatUpdate | None) -> dict:
    prompt, completion = (update.prompt_tokens, update.tokens) if update else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ChatCompletions:
    """Runs one ``/v1/chat/completions`` request, whole or streamed."""

    def __init__(self, inference: Inference, args: ChatArguments) -> None:
        self.inference, self.args = inference, args
        self.id = "chatcmpl-" + uuid.uuid4().hex[:24]
        self.created = int(time.time())

    def open(self) -> Iterator[ChatUpdate]:
        """Submit: bad input, busy and not ready raise here, before any byte of the answer is sent."""
        try:
            return iter(self.inference.generate(self.args.task, self.args.message, self.args.history,
                                                self.args.options))
        except AllInOneError as exc:
            raise ApiError.of(exc) from exc

    def whole(self, updates: Iterator[ChatUpdate]) -> dict:
        stop = StopText(self.args.stops)
        text, last = "", None
        try:
            for last in updates:
                text += stop.feed(last.text, final=last.done)
                if stop.stopped:
                    break
        except AllInOneError as exc:
            raise ApiError.of(exc) from exc
        finally:
            updates.close()  # a stop string ends the generation at once
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.args.task,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": _finish_reason(last, stop.stopped) if last else "stop", "logprobs": None}],
            "usage": _usage(last),
        }

    def _chunk(self, delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.args.task,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def events(self, updates: Iterator[ChatUpdate]) -> AsyncIterator[str]:
        """The answer as Server-Sent Events. A client that goes away cancels the generation."""
        stop = StopText(self.args.stops)
        last = None
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            while True:
                update = await run_in_threadpool(next, updates, None)
                if update is None:
                    break
                last = update
                new = stop.feed(update.text, final=update.done)
                if new:
                    yield self._chunk({"content": new})
                if stop.stopped or update.done:
                    break
            yield self._chunk({}, _finish_reason(last, stop.stopped) if last else "stop")
            if self.args.include_usage:
                yield self._chunk({}, usage=_usage(last), choices=False)
        except AllInOneError as exc:  # after the headers: the error goes in the stream, as OpenAI's does
            yield f"data: {json.dumps(ApiError.of(exc).body(), ensure_ascii=False)}\n\n"
        finally:
            await run_in_threadpool(updates.close)
        yield "data: [DONE]\n\n"


def _classify_body(body: dict, classify_tasks: set[str]) -> tuple[str, list[str], ClassifyMode]:
    task = body.get("task")
    if not isinstance(task, str) or task not in classify_tasks:
        raise ApiError(404 if isinstance(task, str) else 400,
                       f"'task' must name a classify task: {', '.join(sorted(classify_tasks))}.", code=(
                           "task_not_found" if isinstance(task, str) else None), param="task")
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError(400, "'input' must be a string or a non-empty list of strings.", param="input")
    try:
        mode = ClassifyMode.parse(body.get("mode"))
    except InvalidInput as exc:
        raise ApiError(400, str(exc), param="mode") from None
    return task, texts, mode


def add_openai_routes(app: FastAPI, inference: Inference, keys: ApiKeys) -> None:
    """Mount ``/v1``: see the module doc. ``inference`` is the instrumented service the UI uses too."""

    def tasks(kind: TaskKind) -> list[TaskInfo]:
        return [info for info in inference.task_infos() if info.kind == kind]

    def model_card(info: TaskInfo) -> dict:
        return {"id": info.name, "object": "model", "created": 0, "owned_by": OWNER}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.get("/v1/models", include_in_schema=False)
    def models(request: Request) -> JSONResponse:
        keys.check(request)
        return JSONResponse({"object": "list", "data": [model_card(i) for i in tasks(TaskKind.GENERATE)]})

    @app.get("/v1/models/{model_id}", include_in_schema=False)
    def model(model_id: str, request: Request) -> JSONResponse:
        keys.check(request)
        for info in tasks(TaskKind.GENERATE):
            if info.name == model_id:
                return JSONResponse(model_card(info))
        raise ApiError(404, f"The model {model_id!r} does not exist.", code="model_not_found", param="model")

    @app.post("/v1/chat/completions", include_in_schema=False)
    async def chat_completions(request: Request):
        keys.check(request)
        args = chat_arguments(_body(await request.body()), {i.name for i in tasks(TaskKind.GENERATE)})
        completion = ChatCompletions(inference, args)
        updates = await run_in_threadpool(completion.open)
        if args.stream:
            return StreamingResponse(completion.events(updates), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return JSONResponse(await run_in_threadpool(completion.whole, updates))

    @app.post("/v1/classify", include_in_schema=False)
    async def classify(request: Request) -> JSONResponse:
        keys.check(request)
        task, texts, mode = _classify_body(_body(await request.body()), {i.name for i in tasks(TaskKind.CLASSIFY)})
        try:
            results = await run_in_threadpool(inference.classify, task, texts, mode)
        except AllInOneError as exc:
            raise ApiError.of(exc) from exc
        return JSONResponse({"object": "list", "task": task,
                             "data": [{"index": i, **r.to_api()} for i, r in enumerate(results)]})

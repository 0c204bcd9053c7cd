"""OpenRouter (or any OpenAI-compatible server) through litellm, behind the `LLM` protocol.

Retries live here rather than in litellm (`num_retries=0`) so they are visible in logs, testable,
honour `Retry-After`, and stop as soon as output has been streamed: a retry after that would show
the user the answer twice. litellm is imported on first use, in a thread, because the import takes
seconds and would otherwise block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from agent_core.llm.base import LLMRequest
from agent_core.llm.types import (
    Completed,
    LLMError,
    LLMUsage,
    ModelResponse,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallRequest,
)

if TYPE_CHECKING:
    from config.settings import Settings

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

logger = logging.getLogger(__name__)

OPENROUTER_PREFIX = "openrouter/"
"""litellm's provider prefix; OpenRouter itself (and its `models` list) wants bare ids."""

_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")

Sleep = Callable[[float], Awaitable[None]]


class LiteLLMModel:
    """Streams chat completions from OpenRouter via `litellm.acompletion`."""

    def __init__(
        self,
        *,
        api_key: str | None,
        app_url: str,
        app_name: str,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_after: float = 60.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`timeout` bounds each socket read, not the whole stream (that is how litellm applies it).

        A `Retry-After` longer than `max_retry_after` is not waited for: the call fails with a
        retryable `LLMError` instead. `sleep` is the backoff's clock, replaceable in tests.
        """
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max, max_retry_after)
        self.headers = {"HTTP-Referer": app_url, "X-Title": app_name}
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> LiteLLMModel:
        return cls(
            api_key=settings.openrouter_api_key,
            base_url=settings.openrouter_base_url,
            app_url=settings.app_url,
            app_name=settings.app_name,
            timeout=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            backoff_base=settings.llm_backoff_seconds,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        litellm = await load_litellm()
        kwargs = self.completion_kwargs(request)
        attempt = 0
        while True:
            assembler = _StreamAssembler()
            try:
                async with contextlib.aclosing(_attempt(litellm, kwargs, assembler)) as events:
                    async for event in events:
                        yield event
            except _UpstreamFailure as failure:
                if error := self._give_up(failure, attempt, assembler.emitted):
                    raise error from failure.__cause__
                delay = self.retry.delay(attempt, failure.retry_after)
                logger.warning(
                    "LLM call to %s failed (%s); retry %d/%d in %.2fs",
                    request.model,
                    failure,
                    attempt + 1,
                    self.retry.max_retries,
                    delay,
                )
                await self._sleep(delay)
                attempt += 1
                continue
            yield Completed(response=assembler.response())
            return

    def completion_kwargs(self, request: LLMRequest) -> dict[str, Any]:
        """The `litellm.acompletion` arguments for a request (public for inspection in tests)."""
        body: dict[str, Any] = {"usage": {"include": True}}
        if request.fallback_models:
            body["models"] = [bare_model_id(m) for m in (request.model, *request.fallback_models)]
        kwargs: dict[str, Any] = {
            "model": openrouter_model_id(request.model),
            "messages": [message.to_openai() for message in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "api_key": self.api_key,
            "extra_headers": dict(self.headers),
            "extra_body": body,
            "timeout": self.timeout,
            "num_retries": 0,
            "max_retries": 0,
        }
        if self.base_url:
            kwargs["api_base"] = self.base_url
        if request.tools:
            kwargs["tools"] = [tool.to_openai() for tool in request.tools]
        for name in ("temperature", "top_p", "max_tokens"):
            if (value := getattr(request, name)) is not None:
                kwargs[name] = value
        return kwargs

    def _give_up(self, failure: _UpstreamFailure, attempt: int, emitted: bool) -> LLMError | None:
        """The error that ends the call, or None to retry."""
        if emitted:
            return failure.error(f"LLM stream failed after output started ({failure})")
        if not failure.transient:
            return failure.error(f"LLM request failed ({failure})")
        if attempt >= self.retry.max_retries:
            return failure.error(f"LLM request failed after {attempt + 1} attempts ({failure})")
        if failure.retry_after is not None and failure.retry_after > self.retry.max_retry_after:
            message = f"LLM provider asked to retry after {failure.retry_after:.0f}s ({failure})"
            return failure.error(message, retryable=True)
        return None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a provider's `Retry-After` takes precedence."""

    max_retries: int = 3
    base: float = 0.5
    cap: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.cap, self.base * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def bare_model_id(model: str) -> str:
    """OpenRouter's own id (`vendor/model`): drops litellm's `openrouter/` provider prefix.

    OpenRouter's ids always contain one slash, so `openrouter/auto` is already bare.
    """
    rest = model.removeprefix(OPENROUTER_PREFIX)
    return rest if "/" in rest else model


def openrouter_model_id(model: str) -> str:
    """litellm's id: `openrouter/` + OpenRouter's id (so `openrouter/auto` gets a second one)."""
    return OPENROUTER_PREFIX + bare_model_id(model)


_litellm_module: Any = None


async def load_litellm() -> Any:
    """Import and configure litellm off the event loop; call at startup to pay the cost early."""
    if _litellm_module is not None:
        return _litellm_module
    return await asyncio.to_thread(_litellm)


def _litellm() -> Any:
    global _litellm_module
    if _litellm_module is None:
        import litellm

        litellm.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on errors
        for name in _LITELLM_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)  # it logs every call at INFO
        _litellm_module = litellm
    return _litellm_module


# ------------------------------------------------------------------------------------ one attempt


async def _attempt(
    litellm: Any, kwargs: dict[str, Any], assembler: _StreamAssembler
) -> AsyncGenerator[StreamEvent, None]:
    """One HTTP call; litellm's exceptions become `_UpstreamFailure`, nothing else is caught."""
    try:
        chunks = await litellm.acompletion(**kwargs)
    except Exception as exc:
        raise _UpstreamFailure.from_exception(exc) from exc
    try:
        while True:
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise _UpstreamFailure.from_exception(exc) from exc
            for event in assembler.feed(chunk):
                yield event
    finally:
        await chunks.aclose()
    if _stream_was_cut(chunks):
        raise _UpstreamFailure("stream ended without a finish reason", status=None, transient=True)


def _stream_was_cut(chunks: Any) -> bool:
    """True when the provider never sent a finish reason.

    litellm then invents `finish_reason="stop"` and estimated usage, so a dropped connection
    would look like a short, successful answer. It keeps what the provider really sent in
    `received_finish_reason`; if a litellm version drops that attribute, the check is skipped.
    """
    received = getattr(chunks, "received_finish_reason", "unknown")
    intermittent = getattr(chunks, "intermittent_finish_reason", None)
    return received is None and intermittent is None


class _UpstreamFailure(Exception):
    """A failed attempt, classified for the retry decision."""

    def __init__(
        self, detail: str, *, status: int | None, transient: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.transient = transient
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"upstream status {self.status}" if self.status is not None else "no status"
        return f"{where}: {self.detail}"

    def error(self, message: str, *, retryable: bool = False) -> LLMError:
        return LLMError(message, status_code=self.status, retryable=retryable)

    @classmethod
    def from_exception(cls, exc: Exception) -> _UpstreamFailure:
        litellm = _litellm()
        # MidStreamFallbackError wraps what really happened (a read timeout, an error event).
        inner = getattr(exc, "original_exception", None) or exc
        text = str(exc)
        # litellm's own exceptions name themselves; anything else is a litellm bug or surprise.
        detail = _shorten(text if text.startswith("litellm.") else f"{type(exc).__name__}: {text}")
        if isinstance(inner, (litellm.APIConnectionError, litellm.Timeout)):
            status = _status(inner) if isinstance(inner, litellm.Timeout) else None
            return cls(detail, status=status, transient=True, retry_after=_retry_after(exc))
        status = _status(exc)
        transient = status is not None and (status in (408, 409, 429) or status >= 500)
        return cls(detail, status=status, transient=transient, retry_after=_retry_after(exc))


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(exc: BaseException) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or an HTTP date), if present.

    litellm keeps the provider's headers in `litellm_response_headers`; `exc.response.headers`
    is often empty.
    """
    headers = getattr(exc, "litellm_response_headers", None)
    if not headers:
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    lowered = {str(k).lower(): str(v) for k, v in dict(headers).items()}
    if (millis := _float(lowered.get("retry-after-ms"))) is not None:
        return max(0.0, millis / 1000)
    value = lowered.get("retry-after")
    if value is None:
        return None
    if (seconds := _float(value)) is not None:
        return max(0.0, seconds)
    return _seconds_until(value)


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _seconds_until(http_date: str) -> float | None:
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# ----------------------------------------------------------------------------------- assembling


@dataclass
class _PartialCall:
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    announced: bool = False


class _StreamAssembler:
    """Turns litellm chunks into events and collects the turn for the final `Completed`."""

    def __init__(self) -> None:
        self.emitted = False
        """Whether any text or tool-call delta went out: after that, no retry."""
        self._text: list[str] = []
        self._calls: dict[int, _PartialCall] = {}
        self._finish_reason: str | None = None
        self._usage: Any = None
        self._model: str | None = None
        self._generation_id: str | None = None

    def feed(self, chunk: Any) -> list[StreamEvent]:
        self._model = self._model or _served_model(chunk)
        self._generation_id = self._generation_id or getattr(chunk, "id", None)
        if (usage := getattr(chunk, "usage", None)) is not None:
            self._usage = usage
        if not chunk.choices:
            return []
        choice = chunk.choices[0]
        self._finish_reason = choice.finish_reason or self._finish_reason
        events: list[StreamEvent] = []
        if choice.delta.content:
            self._text.append(choice.delta.content)
            events.append(TextDelta(text=choice.delta.content))
        for tool_call in choice.delta.tool_calls or []:
            if (delta := self._tool_call_delta(tool_call)) is not None:
                events.append(delta)
        self.emitted = self.emitted or bool(events)
        return events

    def _tool_call_delta(self, tool_call: Any) -> ToolCallDelta | None:
        """Announce a call once its name is known (id and name together, whatever order the
        provider used, never repeated), then pass on argument fragments."""
        index = tool_call.index if tool_call.index is not None else 0
        partial = self._calls.setdefault(index, _PartialCall())
        function = tool_call.function
        fragment = (function.arguments if function else None) or ""
        partial.id = partial.id or tool_call.id or None
        partial.name = partial.name or (function.name if function else None) or None
        partial.arguments += fragment
        if partial.name is None:
            return None
        if not partial.announced:
            partial.announced = True
            partial.id = partial.id or f"call_{index}"
            return ToolCallDelta(
                index=index, id=partial.id, name=partial.name, arguments_delta=partial.arguments
            )
        return ToolCallDelta(index=index, arguments_delta=fragment) if fragment else None

    def response(self) -> ModelResponse:
        calls = [
            ToolCallRequest(
                id=call.id or f"call_{index}",
                name=call.name or "",
                arguments=call.arguments or "{}",
            )
            for index, call in sorted(self._calls.items())
        ]
        return ModelResponse(
            text="".join(self._text),
            tool_calls=calls,
            finish_reason=self._finish_reason,
            usage=_usage(self._usage, self._model, self._generation_id),
        )


def _served_model(chunk: Any) -> str | None:
    """The model that answered: litellm overwrites `chunk.model` with the requested one and keeps
    the provider's (which differs after an OpenRouter fallback) in its hidden params."""
    hidden = getattr(chunk, "_hidden_params", None) or {}
    return hidden.get("provider_response_model") or getattr(chunk, "model", None)


def _usage(raw: Any, model: str | None, generation_id: str | None) -> LLMUsage:
    """Usage from the stream's last chunk; `cost` is OpenRouter's own USD figure."""
    if raw is None:
        return LLMUsage(model=model, generation_id=generation_id)
    prompt_details = getattr(raw, "prompt_tokens_details", None)
    completion_details = getattr(raw, "completion_tokens_details", None)
    cost = getattr(raw, "cost", None)
    return LLMUsage(
        prompt_tokens=getattr(raw, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(raw, "completion_tokens", 0) or 0,
        cached_tokens=getattr(prompt_details, "cached_tokens", 0) or 0,
        reasoning_tokens=getattr(completion_details, "reasoning_tokens", 0) or 0,
        cost_usd=float(cost) if cost is not None else None,
        model=model,
        generation_id=generation_id,
    )

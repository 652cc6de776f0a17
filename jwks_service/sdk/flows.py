"""The SDK's exchanges with the issuer as I/O-free flows, and the two drivers that run them.

A flow is a generator: it yields what it needs next (a `Request` to send, or a `Command` for the
verifier, such as "refresh the key set now") and is sent the answer, a ``(response, body)`` pair
whose body was already read under the SDK's bound. An exception raised while getting the answer is
thrown into the flow at the ``yield``, so the flow alone decides what a failure means. Its return
value is the result. The decisions are written once, in the flows (`verifier._Core`,
`client._Base`); `run` (threads) and `arun` (asyncio) only do the waiting, the way httpx's auth
flows are driven by its sync and async clients.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

import httpx

from .bounded import ACCEPT_ENCODING


def scheme(url: object) -> str:
    """The URL's scheme ("" for anything that is not a parsable URL string)."""
    try:
        return urlsplit(url).scheme if isinstance(url, str) else ""
    except ValueError:
        return ""


T = TypeVar("T")
S = TypeVar("S")
C = TypeVar("C", httpx.Client, httpx.AsyncClient)

Answer = tuple[httpx.Response, bytes]  # the response (its body read) and the body, bounded


def retry_after(response: httpx.Response) -> float | None:
    """A Retry-After in seconds (the HTTP-date form is not used by our issuer: ignored)."""
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    what: str  # names the document in the bound's error message
    headers: Mapping[str, str] | None = None
    data: Mapping[str, str] | None = None
    auth: tuple[str, str] | None = None  # HTTP Basic; None: whatever the client is set up with

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.stream`` for this request."""
        options: dict[str, Any] = {"headers": {**(self.headers or {}), **ACCEPT_ENCODING}}
        if self.data is not None:
            options["data"] = self.data
        if self.auth is not None:
            options["auth"] = self.auth
        return options


def http_client(http: httpx.Client | httpx.AsyncClient | None, kind: type[C], owner: str, **options: Any) -> C:
    """`http` when it is a `kind` of client, a new one made with `options` when it is None; a client
    of the other kind is a TypeError (`owner` is the class that was given it)."""
    if http is None:
        return kind(**options)
    if not isinstance(http, kind):
        other, twin = (httpx.AsyncClient, f"Async{owner}") if kind is httpx.Client else (httpx.Client, owner[5:])
        raise TypeError(f"{owner} takes an httpx.{kind.__name__}; {twin} takes an httpx.{other.__name__}")
    return http


class Command(Enum):
    """What a verifier's flow asks of its driver besides a request."""

    REFRESH = "refresh"  # fetch the key set now (one fetch at a time) and wait for it
    REFRESH_BEHIND = "refresh behind"  # start a refresh beside, and go on with the keys at hand


Flow = Generator[S, Any, T]


class _Stepper(Generic[S, T]):
    """A flow and where it stands: each `step` hands it an answer (or an error) and returns what it
    needs next, or None once it has returned (then `result`)."""

    __slots__ = ("_flow", "_result")

    def __init__(self, flow: Flow[S, T]) -> None:
        self._flow = flow
        self._result: T | None = None

    def step(self, answer: Any = None, error: Exception | None = None) -> S | None:
        try:
            return self._flow.send(answer) if error is None else self._flow.throw(error)
        except StopIteration as stop:
            self._result = stop.value
            return None

    def result(self) -> T:
        return cast(T, self._result)


def run(flow: Flow[S, T], do: Callable[[S], Any]) -> T:
    """Drive `flow` to its end, doing each step with `do` (blocking)."""
    stepper = _Stepper(flow)
    step = stepper.step()
    while step is not None:
        try:
            answer = do(step)
        except Exception as exc:
            step = stepper.step(error=exc)
        else:
            step = stepper.step(answer)
    return stepper.result()


async def arun(flow: Flow[S, T], do: Callable[[S], Awaitable[Any]]) -> T:
    """`run` for asyncio: each step is awaited."""
    stepper = _Stepper(flow)
    step = stepper.step()
    while step is not None:
        answer: Any = None
        error: Exception | None = None
        try:
            answer = await do(step)
        except Exception as exc:  # only what `do` raised goes into the flow; the flow's own errors leave
            error = exc
        step = stepper.step(answer, error)
    return stepper.result()


class Backoff:
    """The event stream's reconnect delays: doubling from `low` to `high`, each waited with jitter; a
    refusal waits at least its Retry-After (else `high`), and a stream that became live starts over."""

    def __init__(self, low: float, high: float) -> None:
        self.low = low
        self.high = high
        self.delay = low

    def refused(self, retry_after: float | None) -> None:
        self.delay = max(self.delay, retry_after or self.high)

    def reset(self) -> None:
        self.delay = self.low

    def wait(self) -> float:
        """How long to wait before the next attempt (the delay after it doubles)."""
        wait = self.delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret
        self.delay = min(self.high, self.delay * 2)
        return wait

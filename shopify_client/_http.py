"""One HTTP POST with a timeout, no redirects, and a verdict on what a failure means.

Shared by the GraphQL call and the token endpoint. urllib (the stdlib, as ShopifyAPI uses) keeps
the environment's proxy settings. Two things differ from a plain ``urlopen``:

- redirects are refused: urllib would replay our headers (the access token) to wherever a
  3xx points, and turn the POST into a GET;
- a failure says whether the request can have reached Shopify. ``NotSent`` (connection
  refused, name not resolved) is safe to repeat for anything; ``NoAnswer`` (timeout, reset,
  dropped connection) may have been applied.
"""

from __future__ import annotations

import http.client
import math
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, NoReturn


@dataclass(frozen=True)
class HTTPAnswer:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def retry_after(self, *, cap: float) -> float:
        """Retry-After in seconds (Shopify sends a number), at most ``cap``; 1 s if unreadable."""
        raw = self.header("Retry-After")
        try:
            seconds = float(raw) if raw is not None else 1.0
        except ValueError:
            seconds = 1.0
        if not math.isfinite(seconds):
            seconds = 1.0
        return min(max(seconds, 0.0), cap)


class NotSent(Exception):
    """The request never reached the server: repeating it cannot apply anything twice."""


class NoAnswer(Exception):
    """The request may have reached the server, but no complete answer came back."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status: we answer it as such


_opener = urllib.request.build_opener(_RefuseRedirects())


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HTTPAnswer:
    """POST ``body`` to ``url``; every HTTP answer (2xx or not) comes back as an HTTPAnswer.

    ``timeout`` bounds each blocking socket operation (connect, each read), as urllib does.
    """
    if not url.startswith(("https://", "http://")):
        raise ValueError("only http(s) URLs are posted to")
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        response = _opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        with error:  # holds the socket: close it (an open one is a ResourceWarning)
            return _answer(error.code, error.headers, error)
    except urllib.error.URLError as error:
        _raise_for_failure(error.reason, sending=True)
    except (OSError, http.client.HTTPException) as error:
        _raise_for_failure(error, sending=False)
    with response:
        return _answer(response.status, response.headers, response)


def _answer(status: int, headers: Any, stream: IO[bytes]) -> HTTPAnswer:
    try:
        body = stream.read()
    except (OSError, http.client.HTTPException) as error:
        raise NoAnswer(f"the answer broke off: {_describe(error)}") from error
    names = {str(name).lower(): str(value) for name, value in (headers or {}).items()}
    return HTTPAnswer(status=status, headers=names, body=body)


def _raise_for_failure(reason: object, *, sending: bool) -> NoReturn:
    # Refused or unresolvable: nothing left this machine. Anything else (a timeout while
    # connecting included, to stay on the safe side) may have delivered the request.
    cause = reason if isinstance(reason, BaseException) else None
    if sending and isinstance(reason, ConnectionRefusedError | socket.gaierror):
        raise NotSent(_describe(reason)) from cause
    raise NoAnswer(_describe(reason)) from cause


def _describe(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)

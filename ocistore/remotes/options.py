"""Configuration values of the registry client: retry policy, timeouts, options.

All three are frozen attrs records. ``Retry`` follows urllib3's ``Retry``: it is an
immutable value, ``increment()`` returns a new one that records what went wrong, and
the caller asks ``is_exhausted()`` instead of counting attempts in its own loop.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs

from ocistore._lazy import lazy_module

if TYPE_CHECKING:
    import random
else:
    random = lazy_module("random")  # loaded on first use, not by every fresh process

__all__ = [
    "DEFAULT_USER_AGENT",
    "RETRY_STATUSES",
    "CredentialsOption",
    "RegistryOptions",
    "Retry",
    "RetryEvent",
    "Timeout",
]

DEFAULT_USER_AGENT = "ocistore/0.1.0"

# Answers worth trying again: throttling and transient server errors.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

CredentialsOption = Mapping[str, tuple[str, str]] | Callable[[str], "tuple[str, str] | None"]
"""``{"host[:port]": (username, secret)}`` or ``host -> (username, secret) | None``."""


@attrs.frozen
class RetryEvent:
    """One failed attempt recorded in ``Retry.history``."""

    method: str
    url: str
    status: int = 0
    error: str = ""


@attrs.frozen
class Retry:
    """How often and how patiently a registry request is tried again.

    ``total`` bounds the retries of one request (so at most ``total + 1`` attempts)
    after a connection error or an answer whose status is in ``statuses``. ``read``
    bounds the reconnections of one blob download whose body was cut short (each one
    resumes with ``Range: bytes=<offset>-``). The wait before retry ``n`` is
    ``backoff_factor * 2 ** (n - 1)`` seconds, at most ``backoff_max``, with up to 10 %
    jitter; a ``Retry-After`` header is honoured up to ``backoff_max``.
    """

    total: int = 4
    read: int = 5
    backoff_factor: float = 0.2
    backoff_max: float = 10.0
    statuses: frozenset[int] = attrs.field(default=RETRY_STATUSES, converter=frozenset)
    history: tuple[RetryEvent, ...] = ()

    @classmethod
    def never(cls) -> Retry:
        """A policy that never retries."""
        return cls(total=0, read=0)

    def is_retryable_status(self, status: int) -> bool:
        """Whether an answer with this status may be retried."""
        return status in self.statuses

    def increment(self, method: str, url: str, status: int = 0, error: BaseException | None = None) -> Retry:
        """A new ``Retry`` with one retry used up and the failure appended to the history."""
        event = RetryEvent(method, url, status, repr(error) if error is not None else "")
        return attrs.evolve(self, total=self.total - 1, history=(*self.history, event))

    def increment_read(self, method: str, url: str, error: BaseException | None = None) -> Retry:
        """A new ``Retry`` with one reconnection of a cut-short body used up."""
        event = RetryEvent(method, url, 0, repr(error) if error is not None else "")
        return attrs.evolve(self, read=self.read - 1, history=(*self.history, event))

    def is_exhausted(self) -> bool:
        """True once more retries were used than allowed."""
        return self.total < 0 or self.read < 0

    def backoff_time(self, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt."""
        n = len(self.history)
        if n == 0:
            return 0.0
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.backoff_max)
        base = min(self.backoff_max, self.backoff_factor * (2.0 ** (n - 1)))
        return base * (1.0 + 0.1 * random.random())


@attrs.frozen
class Timeout:
    """Seconds to wait for a connection and, once connected, between two reads."""

    connect: float = 10.0
    read: float = 60.0


def _to_timeout(value: Timeout | float | int) -> Timeout:
    if isinstance(value, Timeout):
        return value
    return Timeout(connect=float(value), read=float(value))


def _path_or_none(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


@attrs.frozen
class RegistryOptions:
    """How to reach registries; see DESIGN.md ("Registry access is configured by ...").

    Attributes:
        hosts_dir: a containerd ``hosts.toml`` tree (``<dir>/<host>/hosts.toml``).
        credentials: ``{"host[:port]": (username, secret)}`` or a callable
            ``host -> (username, secret) | None``; when ``None``, the docker
            ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``) and its credential
            helpers are used.
        plain_http: talk HTTP instead of HTTPS to every host without a hosts.toml.
        skip_verify: do not verify TLS certificates.
        ca_file: a PEM bundle trusted in addition to the system's.
        timeout: a ``Timeout`` or seconds for both connect and read.
        retry: the retry policy of every request.
        max_concurrent_downloads: connections kept per host (and the fetcher's parallelism).
        user_agent: the ``User-Agent`` header.
    """

    hosts_dir: str | None = attrs.field(default=None, converter=_path_or_none)
    credentials: CredentialsOption | None = None
    plain_http: bool = False
    skip_verify: bool = False
    ca_file: str | None = attrs.field(default=None, converter=_path_or_none)
    timeout: Timeout = attrs.field(default=Timeout(), converter=_to_timeout)
    retry: Retry = Retry()
    max_concurrent_downloads: int = 3
    user_agent: str = DEFAULT_USER_AGENT

"""The ways to get an image onto a node that the bench compares, pluggable.

A :class:`Mode` says what its first step is (the Store call, the CLI verb, the containerd
command when containerd has one), and whether it can run here: :func:`available` gives
``None`` or the reason it cannot (the ``lazy`` mode asks whether ``Store.fetch`` takes
``lazy``). Register another with :func:`register`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import attrs

__all__ = ["MODES", "Mode", "available", "get", "register"]


@attrs.frozen
class Mode:
    """One way to bring an image onto a node, then start a container from it."""

    name: str
    label: str
    step: str
    """Name of the first step in the report (``fetch``, ``pull``, ...)."""
    store_call: Callable[[Any, str], Any]
    """``(store, ref) -> Image``: the first step through the API."""
    cli_steps: tuple[tuple[str, ...], ...]
    """The CLI commands of the first step (``{ref}`` stands for the reference); timed together."""
    containerd_args: tuple[str, ...] | None
    """The ``ctr`` arguments of the first step (the ref is appended), or None."""
    containerd_missing: str = ""
    """Why containerd has no counterpart (when ``containerd_args`` is None)."""
    requires: Callable[[], str | None] = attrs.field(default=lambda: None)
    """None when the mode can run with this ocistore, else the reason it cannot."""


def _lazy_missing() -> str | None:
    from ocistore.store import Store  # noqa: PLC0415 - the facade is only needed to ask

    if "lazy" not in inspect.signature(Store.fetch).parameters:
        return "Store.fetch has no `lazy` parameter in this ocistore (lazy eStargz fetch not merged yet)"
    return None


MODES: dict[str, Mode] = {}


def register(mode: Mode) -> None:
    """Add (or replace) a mode by name."""
    MODES[mode.name] = mode


def _pull_discard(store: Any, ref: str) -> Any:
    """``pull(discard_layers=True)``, then the gc that removes the discarded blobs."""
    image = store.pull(ref, discard_layers=True)
    store.gc()
    return image


register(Mode("fetch", "fetch only (unpack on first create)", "fetch",
              lambda s, ref: s.fetch(ref), (("images", "fetch", "{ref}"),), ("content", "fetch")))
register(Mode("pull", "pull (blobs kept)", "pull", lambda s, ref: s.pull(ref), (("images", "pull", "{ref}"),),
              ("images", "pull")))
register(Mode("discard", "pull + discard_layers + gc", "pull_discard", _pull_discard,
              (("images", "pull", "--discard-layers", "{ref}"), ("gc",)), None,
              "ctr 1.6 has no flag for it (discard_unpacked_layers is a CRI plugin setting)"))
register(Mode("lazy", "lazy eStargz fetch", "fetch_lazy", lambda s, ref: s.fetch(ref, lazy=True),
              (("images", "fetch", "--lazy", "{ref}"),), None,
              "containerd needs the stargz snapshotter plugin, not part of 1.6", requires=_lazy_missing))


def get(name: str) -> Mode:
    """The mode called ``name`` (KeyError lists the known ones)."""
    try:
        return MODES[name]
    except KeyError:
        raise KeyError(f"unknown mode {name!r}; known: {', '.join(MODES)}") from None


def available(names: Sequence[str]) -> dict[str, str | None]:
    """``{mode: None or the reason it cannot run}`` for ``names``."""
    return {n: get(n).requires() for n in names}

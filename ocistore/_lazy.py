"""Modules loaded on first use, declared at the top of the module that uses them.

``import ocistore`` must stay cheap: every short-lived CLI call and test-tooling process
pays for it, and the registry client alone pulls in urllib3, ssl and certifi (about
60 ms here) for operations that may never touch a registry. A module that needs such a
dependency declares it at its top::

    if TYPE_CHECKING:
        from ocistore import remotes
    else:
        remotes = lazy_module("ocistore.remotes")

The name is then used as the module (``remotes.RegistryClient(...)``); the import runs on
the first attribute access, under the import system's own per-module lock, so threads may
race to it safely. The architecture test reads these declarations as imports, so they
obey the same layering rules as import statements.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["lazy_module"]


class _LazyModule:
    """Stands in for a module until an attribute of it is read."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            self._module = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._module is not None else "not loaded yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_module(name: str) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access."""
    return _LazyModule(name)

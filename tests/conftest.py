"""Shared pytest configuration: fixture plugins, and no leaks from the developer's machine."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["registry_fixtures"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the user's docker credentials or config (as dulwich's test base does)."""
    home: Path = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "OCISTORE_ROOT"):
        monkeypatch.delenv(var, raising=False)

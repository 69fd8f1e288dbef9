"""Shared pytest configuration: fixture plugins, and no leaks from the developer's machine."""

from __future__ import annotations

import os
import sys
import threading
import traceback
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


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the run's status for :func:`pytest_unconfigure`."""
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never hang at exit on a thread a failed test left blocked.

    The interpreter joins every non-daemon thread before it exits, so one test that fails
    while its helper thread waits (for a reader that the failed assertion skipped) would keep
    the whole run alive until CI's time limit ends it, and nothing lands. Such threads are
    named on stderr, and the process exits with the run's own status (a run that passed
    with an idle thread left behind still passes).
    """
    stuck = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for t in stuck:
        t.join(5)
    stuck = [t for t in stuck if t.is_alive()]
    if not stuck:
        return
    frames = sys._current_frames()
    for t in stuck:
        print(f"\nconftest: thread {t.name!r} is still running after the session:", file=sys.stderr)
        frame = frames.get(t.ident) if t.ident is not None else None
        if frame is not None:
            traceback.print_stack(frame, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1] if _EXIT_STATUS else 1)  # 1: the session did not finish

"""What a fresh interpreter loads: for tests that keep modules off a hot path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PRINT_MODULES = "import sys\nprint('\\n'.join(sorted(sys.modules)))\n"


def _modules(source: str, cwd: Path) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCISTORE_")}
    env["PYTHONPATH"] = str(REPO)
    return set(subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, env=env,
                              check=True, cwd=cwd, timeout=120).stdout.split())


def modules_loaded(code: str, cwd: Path) -> set[str]:
    """The modules a fresh ``python -c`` of ``code`` (which must succeed) has loaded at its end,
    less those the interpreter's own start-up loads (site hooks); no OCISTORE_ variables."""
    return _modules(code + "\n" + _PRINT_MODULES, cwd) - _modules(_PRINT_MODULES, cwd)

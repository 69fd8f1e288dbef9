"""The Python examples in docs/api.md run."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_api_examples_run() -> None:
    text = (DOCS / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    runnable = [b for b in blocks if "tempfile" in b]
    assert runnable
    for block in runnable:
        exec(compile(block, "docs/api.md", "exec"), {})

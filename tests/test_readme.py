"""Every ```python block of README.md runs, in order, in one namespace (so the README cannot rot).

The blocks are executed as a new user would paste them; a block may refer to names defined by an
earlier block. Each must finish without an exception; blocks that train keep their step counts
small enough for this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(text: str) -> list[str]:
    return [m.group(1) for m in BLOCK.finditer(text)]


def test_readme_has_python_blocks():
    assert len(python_blocks(README.read_text())) >= 2


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)            # files the examples write land in a temporary folder
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks(README.read_text())):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:  # noqa: BLE001 - re-raised with the block that failed
            raise AssertionError(f"README python block {i + 1} failed: {type(e).__name__}: {e}\n{block}") from e

"""Every tutorial notebook runs end to end the way Jupyter runs it: in its own folder, without ``__file__``.

The tutorials are MyST notebooks (``docs/tutorials/*.md``); the docs build executes them in a kernel
too. Here their code cells run as one program given with ``python -c``, so a cell that used
``__file__`` (undefined in Jupyter) or a path relative to the repository root would fail. Not fed
through stdin: Python names that program's file ``<stdin>``, and the worker processes of a dask
``LocalCluster`` (tutorial 04) then fail to start, trying to import it.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "docs" / "tutorials").glob("*.md"))
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```\s*$", re.S | re.M)


def notebook_code(path: Path) -> str:
    """Join the code cells of a MyST notebook, in order, into one program."""
    return "\n".join(m.group(1) for m in CODE_CELL.finditer(path.read_text()))


def test_tutorials_found():
    """The notebooks are where the docs build and this module look for them, with their code cells."""
    assert len(TUTORIALS) >= 3
    for path in TUTORIALS:
        assert notebook_code(path).count("import gsn") == 1, path.name


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path):
    """The notebook's code runs from the notebook's folder with no ``__file__``."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", notebook_code(path)], cwd=path.parent, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

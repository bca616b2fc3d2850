"""Image comparison for plot tests, squidpy style: render headless, compare to tests/_images with a tolerance.

Set ``GSN_UPDATE_IMAGES=1`` to (re)write the reference images after an intended change of a plot.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.testing.compare import compare_images  # noqa: E402

IMAGES = Path(__file__).parent / "_images"
TOL = 5  # RMS in 0-255 grey levels: same-machine renders match exactly; a missing layer scores ~27


def check_figure(fig, name: str, tmp_path: Path, *, tol: float = TOL) -> None:
    actual = tmp_path / f"{name}.png"
    fig.savefig(actual, dpi=60)
    plt.close(fig)
    expected = IMAGES / f"{name}.png"
    if os.environ.get("GSN_UPDATE_IMAGES"):
        expected.write_bytes(actual.read_bytes())
    assert expected.exists(), f"No reference image {expected}; run with GSN_UPDATE_IMAGES=1 once to create it."
    result = compare_images(str(expected), str(actual), tol=tol)
    assert result is None, result

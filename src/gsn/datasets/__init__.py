"""Datasets: synthetic tissue with ground truth, and synthetic whole slides on disk."""

from ._slide import synthetic_slide
from ._synthetic import HARD, synthetic

__all__ = ["HARD", "synthetic", "synthetic_slide"]

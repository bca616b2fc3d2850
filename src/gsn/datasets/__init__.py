"""Datasets: synthetic tissue with ground truth."""

from ._synthetic import HARD, synthetic

__all__ = ["HARD", "synthetic"]

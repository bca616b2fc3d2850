"""Datasets: synthetic tissue with ground truth."""

from ._synthetic import synthetic

__all__ = ["synthetic"]

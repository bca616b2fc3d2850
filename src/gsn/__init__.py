"""gsn: GeneSegNet for the scverse.

Cell segmentation for imaging spatial transcriptomics from a nucleus stain and the positions of
detected RNA molecules, on :class:`spatialdata.SpatialData` objects.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._constants import Key, SopaAttrs
from ._settings import settings

try:
    __version__ = version("gsn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Key", "SopaAttrs", "datasets", "io", "models", "pl", "pp", "settings", "tl", "__version__"]


def __getattr__(name: str):
    # torch is imported only when the model code is first used: `import gsn` stays fast.
    if name == "models":
        import importlib

        return importlib.import_module(".models", __name__)
    raise AttributeError(f"module 'gsn' has no attribute {name!r}")

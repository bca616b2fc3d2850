"""Adding elements to a SpatialData object, and to its zarr store when it is backed.

I/O is kept apart from computation: every public function computes all of its results first and
hands them here together, so a failure while computing leaves the object untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import spatialdata as sd

from .._logging import logger


def _on_disk(sdata: sd.SpatialData) -> set[str]:
    if not sdata.is_backed():
        return set()
    try:
        return {path.split("/", 1)[1] for path in sdata.elements_paths_on_disk()}
    except (FileNotFoundError, ValueError, KeyError):  # store moved or deleted by the user
        return set()


def add_elements(sdata: sd.SpatialData, elements: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Put ``elements`` into ``sdata``; when it is backed by zarr, write each new element to the store.

    Existing elements in the store are not touched, except those named here with ``overwrite=True``
    (spatialdata refuses to overwrite inside a store, so they are deleted and written again).
    """
    on_disk = _on_disk(sdata)
    for name, element in elements.items():
        if name in sdata and not overwrite:
            raise ValueError(f"Element {name!r} already exists; pass `overwrite=True` to replace it.")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*overwriting.*", category=UserWarning)
            if name in sdata:
                del sdata[name]
            sdata[name] = element
        if sdata.is_backed():
            if name in on_disk:
                sdata.delete_element_from_disk(name)
            sdata.write_element(name)
            logger.info("Wrote %r to %s", name, sdata.path)

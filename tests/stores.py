"""Small SpatialData zarr stores written from the real crops in ../shared/data, for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import data_folder

import gsn

XENIUM_PIXEL_SIZE = 0.2125  # µm, meta.json of xenium_breast_bidcell


def write_xenium_store(path: Path, *, side_px: int = 600) -> Path:
    """Write the top-left ``side_px`` x ``side_px`` pixels of the Xenium breast crop as a zarr store at ``path``.

    The image, prior labels and transcripts keep the crop's transformation to microns (``"global"``).
    """
    sdata = gsn.io.read_folder(data_folder("xenium_breast_bidcell"))
    side = side_px * XENIUM_PIXEL_SIZE
    crop = sdata.query.bounding_box(
        axes=("x", "y"), min_coordinate=[0, 0], max_coordinate=[side, side], target_coordinate_system="global"
    )
    crop.write(path)
    return path

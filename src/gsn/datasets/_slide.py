"""A synthetic whole slide on disk: synthetic tissue tiles laid side by side, for speed and scale tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

# A Xenium slide's pixel size (µm); cells of 4-7 µm radius at that size.
XENIUM_PIXEL_SIZE = 0.2125


def synthetic_slide(
    path: str | os.PathLike,
    shape: tuple[int, int] = (16384, 16384),
    *,
    tile: int = 2048,
    n_unique: int = 4,
    pixel_size: float = XENIUM_PIXEL_SIZE,
    cell_radius: tuple[float, float] = (19.0, 33.0),
    transcripts_per_cell: float = 80.0,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic slide of ``shape`` pixels as a zarr store and return its path.

    The slide is :func:`gsn.datasets.synthetic` tissue in ``tile`` x ``tile`` px tiles: ``n_unique``
    tiles are generated (seeds ``seed, seed + 1, ...``) and repeated over the slide, each tile's
    transcripts shifted to its place, so a slide of any size costs the generation of a few tiles.
    The image is chunked by tile and the transcripts have one partition per tile, so writing and
    reading never hold the slide in memory. With the defaults the cells are 4-7 µm in radius at
    Xenium's 0.2125 µm per pixel and a 16,384 x 16,384 px slide holds about 10 million transcripts
    (0.04 per pixel, as a Xenium slide). Elements: ``dapi`` (image) and ``transcripts`` (points, in
    pixels with a scale to microns); no labels (cells are cut at the tile seams).

    Parameters
    ----------
    path
        Where to write the store.
    shape
        ``(height, width)`` of the slide in pixels; multiples of ``tile``.
    tile
        Side of the generated tiles.
    n_unique
        Number of distinct tiles.
    pixel_size
        Microns per pixel.
    cell_radius, transcripts_per_cell
        Passed to :func:`gsn.datasets.synthetic` (radius in pixels).
    seed
        Seed of the first tile.
    overwrite
        Replace an existing store at ``path``.
    """
    import dask.array as da
    import dask.dataframe as dd
    import pandas as pd
    import spatialdata as sd
    from spatialdata.models import Image2DModel, PointsModel
    from spatialdata.transformations import Scale

    from ._synthetic import synthetic

    path = Path(path)
    h, w = int(shape[0]), int(shape[1])
    if h % tile or w % tile:
        raise ValueError(f"`shape` {shape} must be a multiple of `tile` ({tile}) along both axes.")
    if path.exists():
        if not overwrite:
            raise ValueError(f"{path} exists; pass `overwrite=True` to replace it.")
        shutil.rmtree(path)
    tiles = []
    for i in range(n_unique):
        part = synthetic(shape=(tile, tile), seed=seed + i, cell_radius=cell_radius,
                         transcripts_per_cell=transcripts_per_cell, pixel_size=pixel_size)  # fmt: skip
        image = np.asarray(part["dapi"].values[0])
        points = part["transcripts"].compute()[["x", "y", "gene"]]
        tiles.append((image, points))
    ny, nx = h // tile, w // tile
    which = [[(r * nx + c) % n_unique for c in range(nx)] for r in range(ny)]
    image = da.block([[da.from_array(tiles[k][0], chunks=tile) for k in row] for row in which])
    scale = {"global": Scale([pixel_size, pixel_size], axes=("y", "x"))}
    image_el = Image2DModel.parse(image[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=scale)
    genes = tiles[0][1]["gene"].cat.categories

    def shifted(k: int, r: int, c: int) -> pd.DataFrame:
        df = tiles[k][1].copy()
        df["x"] = df["x"].astype(np.float64) + c * tile
        df["y"] = df["y"].astype(np.float64) + r * tile
        df["gene"] = pd.Categorical(df["gene"].astype(str), categories=genes)
        return df

    parts = [dd.from_pandas(shifted(which[r][c], r, c), npartitions=1) for r in range(ny) for c in range(nx)]
    points = PointsModel.parse(dd.concat(parts), coordinates={"x": "x", "y": "y"}, feature_key="gene",
                               transformations=scale)  # fmt: skip
    sd.SpatialData(images={"dapi": image_el}, points={"transcripts": points}).write(path)
    return path

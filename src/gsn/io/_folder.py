"""Reader for the simple folder layout of small crops (``dapi.tif``, ``transcripts.parquet``, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import spatialdata as sd
import tifffile
from spatialdata.models import Image2DModel, Labels2DModel, PointsModel
from spatialdata.transformations import Identity, Scale

from .._logging import logger


def read_folder(
    path: str | Path,
    *,
    image_key: str = "dapi",
    points_key: str = "transcripts",
    prior_key: str = "prior_labels",
    chunks: int = 1024,
) -> sd.SpatialData:
    """Read a folder with ``dapi.tif``, ``transcripts.parquet`` and optionally ``prior_labels.tif`` and ``meta.json``.

    Transcript ``x`` (column) and ``y`` (row) are in pixels of ``dapi.tif``. The pixel size in
    ``meta.json`` (``pixel_size_um``) becomes a :class:`~spatialdata.transformations.Scale` from
    pixels to the micron coordinate system ``"global"``, shared by every element; without it the
    transformation is the identity and ``"global"`` is in pixels.

    Parameters
    ----------
    path
        The folder.
    image_key, points_key, prior_key
        Names of the image, points and prior-labels elements in the result.
    chunks
        Chunk side of the image and labels (dask).

    Returns
    -------
    SpatialData with the image (``c = ["DAPI"]``), transcripts (categorical ``gene`` as feature key)
    and, when present, the prior labels. ``sdata.attrs["gsn_meta"]`` holds ``meta.json``.
    Folders without ``dapi.tif`` are read with the labels' frame and no image.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder.")
    meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").exists() else {}
    px = meta.get("pixel_size_um")
    transform = Scale([px, px], axes=("y", "x")) if px else Identity()
    transformations = {"global": transform}

    images, labels = {}, {}
    image_file, prior_file = path / "dapi.tif", path / "prior_labels.tif"
    if image_file.exists():
        dapi = tifffile.imread(image_file)
        if dapi.ndim != 2:
            raise ValueError(f"{image_file} has shape {dapi.shape}; expected a 2D nucleus stain.")
        images[image_key] = Image2DModel.parse(
            dapi[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=transformations,
            chunks=(1, chunks, chunks),
        )  # fmt: skip
    else:
        logger.warning("%s has no dapi.tif: reading transcripts and labels only.", path)
    if prior_file.exists():
        prior = tifffile.imread(prior_file)
        labels[prior_key] = Labels2DModel.parse(
            prior.astype(np.int32), dims=("y", "x"), transformations=transformations, chunks=(chunks, chunks)
        )

    tx_file = path / "transcripts.parquet"
    if not tx_file.exists():
        raise FileNotFoundError(f"{path} has no transcripts.parquet.")
    df = pd.read_parquet(tx_file)
    missing = [c for c in ("x", "y", "gene") if c not in df.columns]
    if missing:
        raise ValueError(f"{tx_file} lacks column(s) {missing}; columns are {list(df.columns)}.")
    df["gene"] = df["gene"].astype("category")
    points = {points_key: PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, feature_key="gene",
                                            transformations=transformations)}  # fmt: skip
    sdata = sd.SpatialData(images=images, labels=labels, points=points)
    sdata.attrs["gsn_meta"] = meta
    return sdata

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


def _read_meta(file: Path) -> dict:
    if not file.exists():
        return {}
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e}).") from e
    if not isinstance(meta, dict):
        raise ValueError(
            f'{file}: must hold a JSON object such as {{"pixel_size_um": 0.2125}}, got a {type(meta).__name__}.'
        )
    px = meta.get("pixel_size_um")
    if px is not None and (isinstance(px, bool) or not isinstance(px, int | float) or not np.isfinite(px) or px <= 0):
        raise ValueError(f"{file}: 'pixel_size_um' must be a positive number of microns, got {px!r}.")
    return meta


def _read_tif(file: Path) -> np.ndarray:
    try:
        return tifffile.imread(file)
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for truncated or foreign files
        raise ValueError(f"{file}: cannot be read as a TIFF image ({type(e).__name__}: {e}).") from e


def _prior_labels(file: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    from ..tl._metrics_core import as_labels

    prior = _read_tif(file)
    if shape is not None and prior.shape != shape:
        raise ValueError(
            f"{file} has shape {prior.shape} but dapi.tif has shape {shape}; they must share the pixel grid."
        )
    prior = as_labels(prior, name=str(file), allow_mask=False)
    if prior.size and int(prior.max()) >= 2**31:
        raise ValueError(f"{file}: cell ids go up to {int(prior.max())}, beyond the int32 range of a labels element.")
    return prior.astype(np.int32)


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
    meta = _read_meta(path / "meta.json")
    px = meta.get("pixel_size_um")
    transform = Scale([px, px], axes=("y", "x")) if px else Identity()
    transformations = {"global": transform}

    images, labels = {}, {}
    image_file, prior_file = path / "dapi.tif", path / "prior_labels.tif"
    if image_file.exists():
        dapi = _read_tif(image_file)
        if dapi.ndim != 2:
            raise ValueError(f"{image_file} has shape {dapi.shape}; expected a 2D nucleus stain.")
        images[image_key] = Image2DModel.parse(
            dapi[None], dims=("c", "y", "x"), c_coords=["DAPI"], transformations=transformations,
            chunks=(1, chunks, chunks),
        )  # fmt: skip
    else:
        logger.warning("%s has no dapi.tif: reading transcripts and labels only.", path)
    if prior_file.exists():
        prior = _prior_labels(prior_file, dapi.shape if image_key in images else None)
        labels[prior_key] = Labels2DModel.parse(
            prior, dims=("y", "x"), transformations=transformations, chunks=(chunks, chunks)
        )

    tx_file = path / "transcripts.parquet"
    if not tx_file.exists():
        raise FileNotFoundError(f"{path} has no transcripts.parquet.")
    try:
        df = pd.read_parquet(tx_file)
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for damaged files
        raise ValueError(f"{tx_file}: cannot be read as a parquet table ({type(e).__name__}: {e}).") from e
    missing = [c for c in ("x", "y", "gene") if c not in df.columns]
    if missing:
        raise ValueError(f"{tx_file} lacks column(s) {missing}; columns are {list(df.columns)}.")
    df["gene"] = df["gene"].astype("category")
    points = {points_key: PointsModel.parse(df, coordinates={"x": "x", "y": "y"}, feature_key="gene",
                                            transformations=transformations)}  # fmt: skip
    sdata = sd.SpatialData(images=images, labels=labels, points=points)
    sdata.attrs["gsn_meta"] = meta
    return sdata

"""Transcript coordinates in an image's pixel frame, through spatialdata's transformations.

spatialdata-io readers give transcripts in microns and images in pixels, each with a transformation
to a shared coordinate system; gsn composes those transformations instead of assuming units.
A pixel (row, col) holds the points with ``floor(y) == row`` and ``floor(x) == col``: spatialdata puts
pixel centres at ``i + 0.5``, so the pixel i covers ``[i, i + 1)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import spatialdata as sd
from spatialdata.transformations import get_transformation
from xarray import DataArray

from ._elements import gene_column, get_image, get_points
from ._logging import logger


def points_to_pixel_matrix(points, image: DataArray, *, points_key: str = "points", image_key: str = "image"):
    """Affine 3x3 matrix mapping points ``(x, y, 1)`` to the image's intrinsic pixel ``(x, y, 1)``.

    The two elements must share a coordinate system ("global" is preferred when several are shared).
    """
    t_points = get_transformation(points, get_all=True)
    t_image = get_transformation(image, get_all=True)
    common = [cs for cs in t_points if cs in t_image]
    if not common:
        raise ValueError(
            f"Points {points_key!r} (coordinate systems {sorted(t_points)}) and image {image_key!r} "
            f"(coordinate systems {sorted(t_image)}) share no coordinate system, so transcripts cannot be placed "
            "on the image. Give both a transformation to the same coordinate system "
            "(spatialdata.transformations.set_transformation)."
        )
    cs = "global" if "global" in common else common[0]
    axes = ("x", "y")
    a_points = t_points[cs].to_affine_matrix(input_axes=axes, output_axes=axes)
    a_image = t_image[cs].to_affine_matrix(input_axes=axes, output_axes=axes)
    return np.linalg.inv(a_image) @ a_points


def apply_affine(matrix: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a 3x3 affine to coordinate vectors; identity matrices cost nothing."""
    if np.allclose(matrix, np.eye(3)):
        return x, y
    return matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2], matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]


# Transcripts spanning less than this fraction of the image along both axes are most likely in
# another unit than the transformations say (e.g. microns given an identity transformation).
_MIN_EXTENT_FRACTION = 0.5
_MIN_POINTS_FOR_EXTENT = 20


def check_genes(genes: pd.Series, *, points_key: str, column: str) -> None:
    """Refuse transcripts without a gene: they would get a cell but be missing from every count."""
    n_nan = int(genes.isna().sum())
    if n_nan:
        raise ValueError(
            f"{n_nan} of {len(genes)} transcripts in {points_key!r} have no gene (NaN in column {column!r}); they "
            f"would be assigned to cells but not counted. Drop them (`df.dropna(subset=[{column!r}])`) or give them "
            "a gene name, then parse the points again."
        )


def check_coordinates(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], *, points_key: str, image_key: str):
    """Validate pixel coordinates and return the boolean mask of those inside the image.

    NaNs are an error (the user must decide what they mean); transcripts outside the image are
    counted and reported, and an error is raised when none falls inside, which almost always means
    the coordinate systems do not match.
    """
    n_nan = int(np.count_nonzero(~np.isfinite(x) | ~np.isfinite(y)))
    if n_nan:
        raise ValueError(
            f"{n_nan} of {len(x)} transcripts in {points_key!r} have NaN or infinite coordinates; "
            "drop them first (e.g. `sdata.points[key] = PointsModel.parse(df.dropna(subset=['x', 'y']), ...)`)."
        )
    h, w = shape
    inside = (x >= 0) & (y >= 0) & (x < w) & (y < h)
    n_out = len(x) - int(np.count_nonzero(inside))
    if len(x) and n_out == len(x):
        raise ValueError(
            f"All {len(x)} transcripts of {points_key!r} fall outside image {image_key!r} ({h} x {w} px) once mapped "
            f"to its pixels (x range {np.min(x):.1f}..{np.max(x):.1f}, y range {np.min(y):.1f}..{np.max(y):.1f}). "
            "Check the transformations of both elements: are the transcripts in microns without a scale "
            "transformation to the image's coordinate system?"
        )
    if n_out:
        logger.warning(
            "%d of %d transcripts (%.2f%%) of %r fall outside image %r (%d x %d px) and are ignored "
            "(transcripts span x %.1f..%.1f, y %.1f..%.1f in the image's pixels).",
            n_out, len(x), 100 * n_out / len(x), points_key, image_key, h, w, np.min(x), np.max(x), np.min(y),
            np.max(y),
        )  # fmt: skip
    elif len(x) >= _MIN_POINTS_FOR_EXTENT:
        span_x, span_y = float(np.ptp(x)), float(np.ptp(y))
        if span_x < _MIN_EXTENT_FRACTION * w and span_y < _MIN_EXTENT_FRACTION * h:
            logger.warning(
                "The transcripts of %r span only x %.1f..%.1f, y %.1f..%.1f of image %r, which is x 0..%d, y 0..%d "
                "px (%.0f%% x %.0f%% of it). If that is not the tissue's layout, the points and the image are in "
                "different units: check that both carry the right transformation to a shared coordinate system "
                "(e.g. a Scale of the pixel size on the image when the transcripts are in microns).",
                points_key, np.min(x), np.max(x), np.min(y), np.max(y), image_key, w, h, 100 * span_x / w,
                100 * span_y / h,
            )  # fmt: skip
    return inside


def transcripts_to_pixels(
    sdata: sd.SpatialData,
    points_key: str | None = None,
    image_key: str | None = None,
    *,
    genes: list[str] | None = None,
    keep_outside: bool = False,
) -> pd.DataFrame:
    """Transcripts as a pandas DataFrame with ``x``, ``y`` in the image's pixel frame and a categorical ``gene``.

    Parameters
    ----------
    sdata
        The object holding the points and the image.
    points_key, image_key
        Elements to use; may be omitted when the object holds exactly one of each.
    genes
        Keep only these genes. Unknown gene names raise an error listing them.
    keep_outside
        Keep transcripts that fall outside the image (they are dropped by default, with a warning).

    Returns
    -------
    DataFrame with float ``x`` and ``y`` (pixels), categorical ``gene`` and the original row position
    ``row`` (an int64 position in the points element, for writing results back).
    """
    points_key, points = get_points(sdata, points_key)
    image_key, image = get_image(sdata, image_key)
    gcol = gene_column(points, points_key)
    df = points[["x", "y", gcol]].compute()
    gene = df[gcol]
    check_genes(gene, points_key=points_key, column=gcol)
    gene = gene.astype("category") if not isinstance(gene.dtype, pd.CategoricalDtype) else gene
    x = df["x"].to_numpy(dtype=np.float64)
    y = df["y"].to_numpy(dtype=np.float64)
    matrix = points_to_pixel_matrix(points, image, points_key=points_key, image_key=image_key)
    x, y = apply_affine(matrix, x, y)
    inside = check_coordinates(x, y, (image.sizes["y"], image.sizes["x"]), points_key=points_key, image_key=image_key)
    out = pd.DataFrame({"x": x, "y": y, "gene": gene.to_numpy(), "row": np.arange(len(x), dtype=np.int64)})
    out["gene"] = pd.Categorical(gene, categories=gene.cat.categories)
    if genes is not None:
        unknown = sorted(set(genes) - set(out["gene"].cat.categories))
        if unknown:
            raise KeyError(f"Gene(s) not found in {points_key!r}: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}.")
        out = out[out["gene"].isin(genes)]
    if not keep_outside:
        out = out[inside if genes is None else inside[out["row"].to_numpy()]]
    return out.reset_index(drop=True)

"""Transcript coordinates in an image's pixel frame, through spatialdata's transformations.

spatialdata-io readers give transcripts in microns and images in pixels, each with a transformation
to a shared coordinate system; gsn composes those transformations instead of assuming units.
A pixel (row, col) holds the points with ``floor(y) == row`` and ``floor(x) == col``: spatialdata puts
pixel centres at ``i + 0.5``, so the pixel i covers ``[i, i + 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class CoordinateSummary:
    """What :func:`check_coordinates` needs to know of transcript pixel coordinates; summable over chunks."""

    n: int = 0
    n_nan: int = 0
    n_out: int = 0
    xmin: float = np.inf
    xmax: float = -np.inf
    ymin: float = np.inf
    ymax: float = -np.inf

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> tuple[CoordinateSummary, np.ndarray]:
        """Summarise one chunk; also return the mask of its finite points inside ``shape``."""
        h, w = shape
        finite = np.isfinite(x) & np.isfinite(y)
        inside = finite & (x >= 0) & (y >= 0) & (x < w) & (y < h)
        xf, yf = x[finite], y[finite]
        summary = cls(len(x), len(x) - int(finite.sum()), int(finite.sum()) - int(inside.sum()))
        if len(xf):
            summary.xmin, summary.xmax = float(xf.min()), float(xf.max())
            summary.ymin, summary.ymax = float(yf.min()), float(yf.max())
        return summary, inside

    def __add__(self, other: CoordinateSummary) -> CoordinateSummary:
        return CoordinateSummary(
            self.n + other.n, self.n_nan + other.n_nan, self.n_out + other.n_out, min(self.xmin, other.xmin),
            max(self.xmax, other.xmax), min(self.ymin, other.ymin), max(self.ymax, other.ymax),
        )  # fmt: skip

    def check(self, shape: tuple[int, int], *, points_key: str, image_key: str) -> None:
        """Raise on NaNs or when no transcript falls inside; warn about transcripts outside or a suspicious extent."""
        if self.n_nan:
            raise ValueError(
                f"{self.n_nan} of {self.n} transcripts in {points_key!r} have NaN or infinite coordinates; "
                "drop them first (e.g. `sdata.points[key] = PointsModel.parse(df.dropna(subset=['x', 'y']), ...)`)."
            )
        h, w = shape
        n_out = self.n_out
        if self.n and n_out == self.n:
            raise ValueError(
                f"All {self.n} transcripts of {points_key!r} fall outside image {image_key!r} ({h} x {w} px) once "
                f"mapped to its pixels (x range {self.xmin:.1f}..{self.xmax:.1f}, y range {self.ymin:.1f}.."
                f"{self.ymax:.1f}). Check the transformations of both elements: are the transcripts in microns "
                "without a scale transformation to the image's coordinate system?"
            )
        if n_out:
            logger.warning(
                "%d of %d transcripts (%.2f%%) of %r fall outside image %r (%d x %d px) and are ignored "
                "(transcripts span x %.1f..%.1f, y %.1f..%.1f in the image's pixels).",
                n_out, self.n, 100 * n_out / self.n, points_key, image_key, h, w, self.xmin, self.xmax, self.ymin,
                self.ymax,
            )  # fmt: skip
        elif self.n >= _MIN_POINTS_FOR_EXTENT:
            span_x, span_y = self.xmax - self.xmin, self.ymax - self.ymin
            if span_x < _MIN_EXTENT_FRACTION * w and span_y < _MIN_EXTENT_FRACTION * h:
                logger.warning(
                    "The transcripts of %r span only x %.1f..%.1f, y %.1f..%.1f of image %r, which is x 0..%d, "
                    "y 0..%d px (%.0f%% x %.0f%% of it). If that is not the tissue's layout, the points and the image "
                    "are in different units: check that both carry the right transformation to a shared coordinate "
                    "system (e.g. a Scale of the pixel size on the image when the transcripts are in microns).",
                    points_key, self.xmin, self.xmax, self.ymin, self.ymax, image_key, w, h, 100 * span_x / w,
                    100 * span_y / h,
                )  # fmt: skip


def check_coordinates(x: np.ndarray, y: np.ndarray, shape: tuple[int, int], *, points_key: str, image_key: str):
    """Validate pixel coordinates and return the boolean mask of those inside the image.

    NaNs are an error (the user must decide what they mean); transcripts outside the image are
    counted and reported, and an error is raised when none falls inside, which almost always means
    the coordinate systems do not match.
    """
    summary, inside = CoordinateSummary.of(np.asarray(x), np.asarray(y), shape)
    summary.check(shape, points_key=points_key, image_key=image_key)
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

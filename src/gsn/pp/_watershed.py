"""The paper's watershed baseline: erosion, distance map, markers at its local maxima, watershed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import spatialdata as sd
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.morphology import disk
from skimage.segmentation import watershed as _skimage_watershed
from spatialdata.models import Labels2DModel
from spatialdata.transformations import get_transformation

from .._constants import WATERSHED_KEY, Key
from .._elements import check_free, get_single_channel
from .._logging import logger
from ..blockwise import Window
from ._normalize import normalize_array, percentiles, warn_missing_pixels


def watershed_array(
    image: np.ndarray,
    *,
    threshold: float | None = None,
    smooth: float = 1.0,
    erosion_radius: int = 2,
    min_distance: int = 5,
    min_area: int = 20,
) -> np.ndarray:
    """Segment nuclei in a 2D stain with the watershed baseline of the GeneSegNet paper.

    Steps: scale to [0, 1] by whole-image percentiles, smooth, threshold (Otsu unless given);
    erode the foreground so touching nuclei separate; markers at local maxima of the eroded
    foreground's distance map; watershed of the negated distance map inside the un-eroded
    foreground, so cells keep their full nuclear extent. Nuclei are numbered in the order of their
    markers' positions (row, then column), as :func:`watershed` numbers them block by block.

    Parameters
    ----------
    image
        2D array.
    threshold
        Foreground level on the [0, 1]-scaled image; Otsu's threshold by default.
    smooth
        Gaussian smoothing (pixels) before thresholding; 0 to disable.
    erosion_radius
        Radius of the erosion (disk) that separates adhesive nuclei.
    min_distance
        Minimum distance in pixels between two markers.
    min_area
        Objects smaller than this many pixels are removed.

    Returns
    -------
    int32 label image, 0 = background, ids 1..n. NaN or infinite pixels are missing values and
    count as background.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"Expected a 2D image, got shape {image.shape}.")
    steps = _Steps(percentiles(image) if image.size else (0.0, 0.0), smooth, erosion_radius, min_distance, min_area)
    whole = Window(0, image.shape[0], 0, image.shape[1])
    if steps.blank:
        logger.warning("The image is blank (constant intensity): no nuclei to segment.")
        return np.zeros(image.shape, np.int32)
    args = (image, whole, whole, image.shape)
    ranges = [range_kernel(steps, *args)]
    steps.threshold = _threshold(steps, threshold, ranges, lambda r: [hist_kernel(steps, *args, r)])
    rows, cols, ids = _numbered([markers_kernel(steps, *args)])
    labels, _ = flood_kernel(steps, *args, rows, cols, ids)
    return relabel_sequential_min_area(labels, 1)


def _numbered(found) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All markers (from every block), sorted by position and numbered 1..n in that order."""
    rows = np.concatenate([f[0] for f in found]).astype(np.int64)
    cols = np.concatenate([f[1] for f in found]).astype(np.int64)
    order = np.lexsort((cols, rows))
    return rows[order], cols[order], np.arange(1, len(rows) + 1, dtype=np.int64)


@dataclass
class _Steps:
    """The watershed's whole-image constants, shared by its block kernels."""

    levels: tuple[float, float]
    smooth: float
    erosion_radius: int
    min_distance: int
    min_area: int
    threshold: float | None = None

    @property
    def blank(self) -> bool:
        return not self.levels[1] > self.levels[0]

    def smoothed(self, raw: np.ndarray) -> np.ndarray:
        img = normalize_array(raw, levels=self.levels)
        return ndimage.gaussian_filter(img, self.smooth) if self.smooth > 0 else img

    def halo(self) -> int:
        """Context a block needs for the smoothing and the erosion (the objects' own size comes on top)."""
        return int(4 * self.smooth + 0.5) + 1 + self.erosion_radius


_OTSU_BINS = 256
DEFAULTS = {"threshold": None, "smooth": 1.0, "erosion_radius": 2, "min_distance": 5, "min_area": 20}
"""The watershed's parameters as :func:`watershed` defaults them (``segment``'s missed nuclei use them too)."""


def range_kernel(steps: _Steps, raw, window: Window, core: Window, shape) -> tuple[float, float]:
    """Smallest and largest smoothed value on the core."""
    core_values = steps.smoothed(raw)[core.within(window)]
    return float(core_values.min()), float(core_values.max())


def hist_kernel(steps: _Steps, raw, window: Window, core: Window, shape, value_range) -> np.ndarray:
    """Histogram of the core's smoothed values: Otsu's bins over the whole image's range (as skimage bins it)."""
    core_values = steps.smoothed(raw)[core.within(window)]
    return np.histogram(core_values, bins=_OTSU_BINS, range=value_range)[0]


def _threshold(steps: _Steps, threshold, ranges, histograms) -> float:
    """Return ``threshold``, or Otsu's from the blocks' value ranges and histograms (as skimage's threshold_otsu)."""
    if threshold is not None:
        return float(threshold)
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    if not hi > lo:
        return 1.0
    counts = np.sum(histograms((lo, hi)), axis=0)
    edges = np.histogram_bin_edges([lo, hi], bins=_OTSU_BINS, range=(lo, hi))
    return float(threshold_otsu(hist=(counts, (edges[:-1] + edges[1:]) / 2)))


def _foreground(steps: _Steps, raw) -> tuple[np.ndarray, np.ndarray]:
    foreground = steps.smoothed(raw) > steps.threshold
    r = steps.erosion_radius
    eroded = ndimage.binary_erosion(foreground, disk(r)) if r > 0 else foreground
    return foreground, eroded


def markers_kernel(steps: _Steps, raw, window: Window, core: Window, shape) -> tuple[np.ndarray, np.ndarray]:
    """Markers (image rows and columns) on the core: local maxima of the eroded foreground's distance map.

    A component is searched whole in the window (skimage searches each one in its own box), so a
    marker is found as in the whole image when the window holds its component.
    """
    _, eroded = _foreground(steps, raw)
    distance = ndimage.distance_transform_edt(eroded)
    components, _ = ndimage.label(eroded)
    peaks = peak_local_max(distance, min_distance=steps.min_distance, labels=components, exclude_border=False)
    # A component too thin for any peak still deserves one marker.
    missed = np.setdiff1d(np.unique(components[eroded]), np.unique(components[tuple(peaks.T)]))
    if missed.size:
        centres = ndimage.maximum_position(distance, components, missed)
        peaks = np.concatenate([peaks.reshape(-1, 2), np.asarray(centres, dtype=np.int64).reshape(-1, 2)])
    rows, cols = peaks[:, 0] + window.y0, peaks[:, 1] + window.x0
    on = core.contains(rows, cols)
    return rows[on], cols[on]


def _overlaps(box: tuple[slice, slice], inner: tuple[slice, slice]) -> bool:
    return all(b.start < i.stop and i.start < b.stop for b, i in zip(box, inner, strict=True))


def flood_kernel(steps: _Steps, raw, window: Window, core: Window, shape, rows, cols, ids):
    """Watershed of the window from its markers (global ``ids``); objects under ``min_area`` dropped; core labels.

    Returns the core's labels, and the ids on the core with the number of foreground clumps (touching
    nuclei, connected) on the core that reach an inner border of the window. When there are none,
    every clump on the core lies whole in the window and its nuclei are exactly the whole image's;
    otherwise the flooding of a clump cut by the window may differ near the cut and spread a few
    nuclei further (neighbouring basins meet elsewhere).
    """
    foreground, _ = _foreground(steps, raw)
    markers = np.zeros(foreground.shape, np.int64)
    markers[rows - window.y0, cols - window.x0] = ids
    depth = -ndimage.distance_transform_edt(foreground)
    clumps, _ = ndimage.label(foreground)
    labels = np.zeros(foreground.shape, np.int64)
    inner = core.within(window)
    # Each clump of touching nuclei is flooded on its own: skimage breaks ties between equal depths by
    # the order pixels entered its queue over the whole array, so flooding the window at once would
    # split a clump differently depending on what else the window holds.
    for k, box in enumerate(ndimage.find_objects(clumps)):
        if box is None or not _overlaps(box, inner):
            continue
        own = clumps[box] == k + 1
        seeds = np.where(own, markers[box], 0)
        if seeds.any():
            labels[box][own] = _skimage_watershed(depth[box], seeds, mask=own)[own]
    area = np.bincount(labels.ravel())
    small = area < max(steps.min_area, 1)
    small[0] = False
    labels[small[labels]] = 0
    on_core = labels[inner].astype(np.int32)
    kept = np.flatnonzero(np.bincount(on_core.ravel())[1:]) + 1
    return on_core, (kept, len(window.reaching_border(clumps, shape, clumps[inner])))


def relabel_sequential_min_area(labels: np.ndarray, min_area: int) -> np.ndarray:
    """Drop objects under ``min_area`` pixels and renumber the rest 1..n (int32)."""
    area = np.bincount(labels.ravel())
    keep = area >= max(min_area, 1)
    keep[0] = False
    lut = np.zeros(len(area), np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lut[labels]


def watershed(
    sdata: sd.SpatialData,
    image_key: str | None = None,
    *,
    channel: str | int | None = None,
    threshold: float | None = None,
    smooth: float = 1.0,
    erosion_radius: int = 2,
    min_distance: int = 5,
    min_area: int = 20,
    key_added: str = WATERSHED_KEY,
    overwrite: bool = False,
    inplace: bool = True,
    block_size: int | None = None,
    halo: int | None = None,
    client=None,
):
    """Watershed baseline segmentation of a nucleus stain, written as a labels element.

    See :func:`watershed_array` for the algorithm: the same labels, computed block by block
    (bounded memory, optionally on a dask cluster). The result is a labels element named
    ``"<key_added>_labels"`` in the image's pixel frame with the image's transformations; turn it
    into cells, polygons and a table with :func:`gsn.tl.cells_from_labels`.

    Parameters
    ----------
    sdata
        SpatialData object with the image.
    image_key
        Image element; may be omitted when there is exactly one.
    channel
        Nucleus-stain channel when the image has several.
    threshold, smooth, erosion_radius, min_distance, min_area
        See :func:`watershed_array`.
    key_added
        Prefix of the labels element (``"<key_added>_labels"``).
    overwrite
        Replace an existing element of that name.
    inplace
        Add the element to ``sdata``; otherwise return it.
    block_size, halo
        Square blocks of ``block_size`` px (default 1024), each read with ``halo`` px of context
        (default 256). The labels are exactly :func:`watershed_array`'s when every clump of touching
        nuclei fits in the halo; a WARNING says when one did not (nuclei near block borders may then
        differ).
    client
        A ``dask.distributed.Client`` to run the blocks on.

    Returns
    -------
    The labels element when ``inplace=False``, else ``None``.
    """
    from ..blockwise import Scratch, block_options
    from ..tl._cells import labels_from_raster, settle_labels

    image_key, image = get_single_channel(sdata, image_key, channel=channel)
    name = Key.labels(key_added)
    if inplace:
        check_free(sdata, [name], overwrite=overwrite, inputs=(image_key,))
    block_size, halo = block_options(block_size, halo)
    data = image.data
    warn_missing_pixels(data, image_key)
    params = {"threshold": threshold, "smooth": smooth, "erosion_radius": erosion_radius,
              "min_distance": min_distance, "min_area": min_area}  # fmt: skip
    with Scratch.shared_with(client, sdata.path) as scratch:
        out = scratch.raster("labels", tuple(int(s) for s in data.shape[-2:]), np.int32, chunk=block_size, keep=True)
        kept = watershed_blocks(data, out, params, block_size=block_size, halo=halo, client=client,
                                workers_read=scratch.shared)  # fmt: skip
    lut = np.zeros(int(kept[-1]) + 1 if len(kept) else 1, dtype=np.int32)
    lut[kept] = np.arange(1, len(kept) + 1, dtype=np.int32)
    logger.info("Watershed on %r: %d objects", image_key, len(kept))
    labels = labels_from_raster(out, lut)
    element = Labels2DModel.parse(labels, dims=("y", "x"), transformations=get_transformation(image, get_all=True))
    if not inplace:
        return element
    from ..io._write import add_elements

    add_elements(sdata, {name: element}, overwrite=overwrite)
    settle_labels(sdata, name, out)
    return None


def watershed_blocks(data, out, params: dict, *, block_size: int, halo: int, client=None, workers_read=False):
    """Segment the nuclei of a 2D (dask) array block by block into the raster ``out`` (the watershed).

    Nuclei keep the global ids of their markers (numbered by position; ids of nuclei dropped under
    ``min_area`` are missing). Returns the sorted ids written. ``params``: the arguments of
    :func:`watershed_array`.
    """
    from .._settings import settings
    from ..blockwise import block_grid, map_blocks, materialize

    steps = _Steps(percentiles(data), params["smooth"], params["erosion_radius"], params["min_distance"],
                   params["min_area"])  # fmt: skip
    shape = tuple(int(s) for s in data.shape[-2:])
    blocks = block_grid(shape, block_size)

    def inputs(block, margin=halo):
        window = block.grow(margin, shape)
        return materialize(data[window.slices]), window, block, shape

    def near(block):  # smoothing context only
        return inputs(block, steps.halo())

    def markers_near(block):
        raw, window, core, shape_ = inputs(block)
        lo, hi = np.searchsorted(rows, [window.y0, window.y1])
        sel = np.arange(lo, hi)[(cols[lo:hi] >= window.x0) & (cols[lo:hi] < window.x1)]
        return raw, window, core, shape_, rows[sel], cols[sel], ids[sel]

    run = {"client": client, "progress": settings.progress, "workers_read": workers_read}
    if steps.blank:
        logger.warning("The image is blank (constant intensity): no nuclei to segment.")
        return np.zeros(0, np.int64)
    ranges = map_blocks(range_kernel, blocks, near, shared=(steps,), desc="watershed: range", **run)
    steps.threshold = _threshold(
        steps, params["threshold"], ranges,
        lambda r: map_blocks(hist_kernel, blocks, lambda b: (*near(b), r), shared=(steps,),
                             desc="watershed: threshold", **run),
    )  # fmt: skip
    found = map_blocks(markers_kernel, blocks, inputs, shared=(steps,), desc="watershed: markers", **run)
    rows, cols, ids = _numbered(found)
    records = map_blocks(flood_kernel, blocks, markers_near, shared=(steps,), write=out,
                         desc="watershed: flooding", **run)  # fmt: skip
    n_cut = sum(r[1] for r in records)
    if n_cut:
        logger.warning(
            "%d clump(s) of touching nuclei reach past the %d px halo of their block: nuclei near the block "
            "borders may differ from the whole image's. Pass a larger `halo`.", n_cut, halo,
        )  # fmt: skip
    return np.unique(np.concatenate([r[0] for r in records]))

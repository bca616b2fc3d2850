"""The paper's watershed baseline: erosion, distance map, markers at its local maxima, watershed."""

from __future__ import annotations

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
from ._normalize import normalize_array, warn_missing_pixels


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
    foreground, so cells keep their full nuclear extent.

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
    img = normalize_array(np.asarray(image))
    if not img.any():
        logger.warning("The image is blank (constant intensity): no nuclei to segment.")
        return np.zeros(img.shape, np.int32)
    if smooth > 0:
        img = ndimage.gaussian_filter(img, smooth)
    if threshold is None:
        threshold = float(threshold_otsu(img)) if img.max() > img.min() else 1.0
    foreground = img > threshold
    eroded = ndimage.binary_erosion(foreground, disk(erosion_radius)) if erosion_radius > 0 else foreground
    distance = ndimage.distance_transform_edt(eroded)
    components, _ = ndimage.label(eroded)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(img.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # A component too thin for any peak still deserves one marker.
    missed = np.setdiff1d(np.unique(components[eroded]), np.unique(components[tuple(peaks.T)]))
    if missed.size:
        centres = ndimage.maximum_position(distance, components, missed)
        rows, cols = np.asarray(centres, dtype=np.int64).reshape(-1, 2).T
        markers[rows, cols] = np.arange(len(peaks) + 1, len(peaks) + 1 + len(missed), dtype=np.int32)
    labels = _skimage_watershed(-ndimage.distance_transform_edt(foreground), markers, mask=foreground)
    return relabel_sequential_min_area(labels, min_area)


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
):
    """Watershed baseline segmentation of a nucleus stain, written as a labels element.

    See :func:`watershed_array` for the algorithm. The result is a labels element named
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

    Returns
    -------
    The labels element when ``inplace=False``, else ``None``.
    """
    image_key, image = get_single_channel(sdata, image_key, channel=channel)
    name = Key.labels(key_added)
    if inplace:
        check_free(sdata, [name], overwrite=overwrite, inputs=(image_key,))
    values = image.values
    warn_missing_pixels(values, image_key)
    labels = watershed_array(
        values,
        threshold=threshold,
        smooth=smooth,
        erosion_radius=erosion_radius,
        min_distance=min_distance,
        min_area=min_area,
    )
    logger.info("Watershed on %r: %d objects", image_key, int(labels.max()))
    element = Labels2DModel.parse(labels, dims=("y", "x"), transformations=get_transformation(image, get_all=True))
    if not inplace:
        return element
    from ..io._write import add_elements

    add_elements(sdata, {name: element}, overwrite=overwrite)
    return None

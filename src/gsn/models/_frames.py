"""The model's pixel frame and the image's: resampling windows one way and labels the other.

A model trained at one pixel size sees an image of another pixel size resampled to its own: an image
of ``H x W`` px becomes ``H' x W'`` model px (``H' = round(H * zoom)``). Every function here maps a
*window* of one frame to the other through the same whole-image coordinates (model pixel ``i`` has its
centre at image coordinate ``(i + 0.5) / zoom - 0.5``, as :func:`skimage.transform.resize`), so a window
resampled alone equals the same window cut from the whole resampled image: block-wise and whole-image
runs see identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..blockwise import Window


@dataclass(frozen=True)
class Frames:
    """The image frame ``image_shape`` and the model frame ``model_shape`` (equal when no resampling)."""

    image_shape: tuple[int, int]
    model_shape: tuple[int, int]

    @classmethod
    def from_zoom(cls, image_shape: tuple[int, int], zoom: float) -> Frames:
        """Frames for a zoom (model pixels per image pixel); 1 keeps the image's pixels."""
        h, w = image_shape
        if zoom == 1.0:
            return cls((h, w), (h, w))
        return cls((h, w), (max(1, int(round(h * zoom))), max(1, int(round(w * zoom)))))

    @property
    def identity(self) -> bool:
        """True when the two frames are the same."""
        return self.image_shape == self.model_shape

    @property
    def zoom(self) -> tuple[float, float]:
        """Model pixels per image pixel along y and x."""
        return self.model_shape[0] / self.image_shape[0], self.model_shape[1] / self.image_shape[1]

    def image_window_for_model(self, window: Window, margin: int = 0) -> Window:
        """Return the image pixels that resampling the model ``window`` reads, plus ``margin``, within the image."""
        if self.identity:
            return window.grow(margin, self.image_shape)
        (zy, zx), (h, w) = self.zoom, self.image_shape
        lo_y, hi_y = (window.y0 + 0.5) / zy - 0.5, (window.y1 - 0.5) / zy - 0.5
        lo_x, hi_x = (window.x0 + 0.5) / zx - 0.5, (window.x1 - 0.5) / zx - 0.5
        y0, y1 = int(np.floor(lo_y)) - margin, int(np.floor(hi_y)) + 2 + margin
        x0, x1 = int(np.floor(lo_x)) - margin, int(np.floor(hi_x)) + 2 + margin
        return Window(max(y0, 0), min(y1, h), max(x0, 0), min(x1, w))

    def model_window_for_image(self, window: Window) -> Window:
        """Return the model pixels that the labels of the image ``window`` are read from."""
        if self.identity:
            return window
        rows = _nearest(np.array([window.y0, window.y1 - 1]), self.zoom[0], self.model_shape[0])
        cols = _nearest(np.array([window.x0, window.x1 - 1]), self.zoom[1], self.model_shape[1])
        return Window(int(rows[0]), int(rows[1]) + 1, int(cols[0]), int(cols[1]) + 1)

    def antialias_sigma(self) -> tuple[float, float]:
        """Gaussian prefilter (image pixels) applied before shrinking, as scikit-image's ``anti_aliasing``."""
        return tuple(max(0.0, (1.0 / z - 1.0) / 2.0) for z in self.zoom)


def _nearest(index: np.ndarray, zoom: float, size: int) -> np.ndarray:
    """Model index nearest to image pixel ``index`` (order-0 resampling)."""
    return np.minimum(np.floor((index + 0.5) * zoom).astype(np.int64), size - 1)


def _linear_axis(values: np.ndarray, start: int, out: range, zoom: float, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` (first index ``start`` along ``axis``) at the model indices ``out``."""
    coord = (np.asarray(out, dtype=np.float64) + 0.5) / zoom - 0.5 - start
    i0 = np.floor(coord).astype(np.int64)
    frac = (coord - i0).astype(np.float32)
    n = values.shape[axis]
    # Outside the image the input is 0 (scikit-image's mode="constant"); inside a window both neighbours exist.
    a = np.take(values, np.clip(i0, 0, n - 1), axis=axis)
    b = np.take(values, np.clip(i0 + 1, 0, n - 1), axis=axis)
    shape = [1] * values.ndim
    shape[axis] = len(i0)
    a = np.where(((i0 >= 0) & (i0 < n)).reshape(shape), a, 0)
    b = np.where(((i0 + 1 >= 0) & (i0 + 1 < n)).reshape(shape), b, 0)
    f = frac.reshape(shape)
    return (1 - f) * a + f * b


def resample_window(values: np.ndarray, source: Window, target: Window, frames: Frames) -> np.ndarray:
    """Resample image values (``(..., h, w)`` covering the image window ``source``) onto the model ``target``.

    Bilinear, with a Gaussian prefilter when shrinking. ``source`` must be
    :meth:`Frames.image_window_for_model` of ``target`` with a margin of at least the prefilter's
    radius, so that the result equals the whole image's resampling on ``target``.
    """
    values = np.asarray(values, dtype=np.float32)
    if frames.identity:
        return values[(..., *target.within(source))]
    sy, sx = frames.antialias_sigma()
    if sy > 0 or sx > 0:
        sigma = [0.0] * (values.ndim - 2) + [sy, sx]
        values = ndimage.gaussian_filter(values, sigma, mode="constant", cval=0.0)
    zy, zx = frames.zoom
    out = _linear_axis(values, source.y0, range(target.y0, target.y1), zy, values.ndim - 2)
    return _linear_axis(out, source.x0, range(target.x0, target.x1), zx, values.ndim - 1).astype(np.float32)


def prefilter_margin(frames: Frames) -> int:
    """Image pixels of context the prefilter needs around a window (scipy's truncation at 4 sigma)."""
    return int(4.0 * max(frames.antialias_sigma()) + 0.5) + 1


def labels_to_image(labels: np.ndarray, source: Window, target: Window, frames: Frames) -> np.ndarray:
    """Labels of the model window ``source`` onto the image window ``target`` (nearest neighbour)."""
    if frames.identity:
        return labels[target.within(source)]
    rows = _nearest(np.arange(target.y0, target.y1), frames.zoom[0], frames.model_shape[0]) - source.y0
    cols = _nearest(np.arange(target.x0, target.x1), frames.zoom[1], frames.model_shape[1]) - source.x0
    return labels[np.ix_(rows, cols)]


class ImageFrameLabels:
    """Labels held in the model frame (a raster), read by image-frame windows (nearest neighbour)."""

    def __init__(self, raster, frames: Frames):
        self.raster = raster
        self.frames = frames
        self.shape = frames.image_shape

    def read(self, window: Window) -> np.ndarray:
        """Return the labels on the image ``window``."""
        source = self.frames.model_window_for_image(window)
        return labels_to_image(self.raster.read(source), source, window, self.frames)

"""GeneSegNet segmentation of a SpatialData object (and the input preparation shared with training)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import spatialdata as sd
from spatialdata.transformations import get_transformation
from xarray import DataArray

from .._constants import DEFAULT_KEY, Key
from .._elements import get_image, get_points
from .._logging import logger
from .._transcripts import transcripts_to_pixels

if TYPE_CHECKING:
    from ..models import GeneSegNetModel

# Pixel sizes that differ by less than this (relative) are treated as equal: no resampling.
_PIXEL_SIZE_RTOL = 0.01
# Resampling by more than this factor (either way) means the pixel sizes are wrong, not the data:
# a 100 um "pixel" would upsample a crop 500-fold. Refused before anything is allocated.
MAX_ZOOM = 8.0
# Images above this many pixels are segmented block by block (bounded memory).
_BLOCKWISE_PIXELS = 64 * 1024 * 1024


def image_pixel_size(image: DataArray) -> float | None:
    """Size of one image pixel in the units of its coordinate system (microns for spatialdata-io data).

    Read from the transformation to ``"global"`` (or the only coordinate system). An identity
    transformation says nothing about units and gives ``None`` ("unknown"); so does a transformation
    with shear or very different x and y scales.
    """
    transformations = get_transformation(image, get_all=True)
    if not transformations:
        return None
    cs = "global" if "global" in transformations else next(iter(transformations))
    affine = transformations[cs].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    linear = affine[:2, :2]
    if np.allclose(linear, np.eye(2)):
        return None
    sx, sy = np.linalg.norm(linear[:, 0]), np.linalg.norm(linear[:, 1])
    if abs(sx - sy) > 0.05 * max(sx, sy) or abs(linear[:, 0] @ linear[:, 1]) > 1e-6 * sx * sy:
        logger.warning("Image pixels are not square in %r (scales %.4g, %.4g); pixel size unknown.", cs, sx, sy)
        return None
    return float(np.sqrt(sx * sy))


def _resize(arr: np.ndarray, shape: tuple[int, int], *, order: int) -> np.ndarray:
    from skimage.transform import resize

    down = shape[0] < arr.shape[-2]
    out = resize(
        arr, (*arr.shape[:-2], *shape), order=order, preserve_range=True, anti_aliasing=bool(order > 0 and down),
        mode="constant", cval=0,
    )  # fmt: skip
    return out.astype(arr.dtype, copy=False)


def _select_channels(image_key: str, image: DataArray, wanted: Sequence[str | int] | None, *, model_channels=None):
    """Pick the image channels the network reads.

    ``wanted`` (user's choice) wins; otherwise the model's channel names are looked up by name; if
    the image has exactly as many channels as the model needs they are used in order, with a
    warning when the names differ; anything else is an error.
    """
    names = [str(c) for c in image.coords["c"].values]
    if wanted is not None:
        wanted = [wanted] if isinstance(wanted, str | int) else list(wanted)
        idx = []
        for ch in wanted:
            if isinstance(ch, str) and ch in names:
                idx.append(names.index(ch))
            elif isinstance(ch, int) and not isinstance(ch, bool) and 0 <= ch < len(names):
                idx.append(ch)
            else:
                raise KeyError(f"Image {image_key!r} has no channel {ch!r}; its channels are {names}.")
        picked = image.isel(c=idx)
    elif model_channels is None:
        picked = image
    elif all(ch in names for ch in model_channels):
        picked = image.isel(c=[names.index(ch) for ch in model_channels])
    elif len(names) == len(model_channels):
        logger.warning(
            "Image %r has channels %s, the model was trained on %s; using them in this order.",
            image_key, names, list(model_channels),
        )  # fmt: skip
        picked = image
    else:
        raise ValueError(
            f"The model reads {len(model_channels)} image channel(s) {list(model_channels)} (plus the RNA map), but "
            f"image {image_key!r} has {len(names)} channel(s) {names}; choose them with `channels=`."
        )
    if model_channels is not None and picked.sizes["c"] != len(model_channels):
        raise ValueError(
            f"The model reads {len(model_channels)} image channel(s) {list(model_channels)} (plus the RNA map), "
            f"but {picked.sizes['c']} were selected from image {image_key!r}."
        )
    return picked


@dataclass
class PreparedInputs:
    """Network inputs of one image, in the model's pixel frame.

    Attributes
    ----------
    inputs
        ``(C, H', W')`` float32: normalised image channels, then the RNA location map.
    image_key, points_key
        Elements used.
    channels
        Names of the image channels used.
    shape
        ``(H, W)`` of the image.
    factor
        ``H' / H``: the zoom applied so pixels match the model's pixel size (1.0: none).
    pixel_size
        Pixel size of the image (``None`` if unknown).
    n_transcripts
        Transcripts on the image.
    """

    inputs: np.ndarray
    image_key: str
    points_key: str
    channels: list[str]
    shape: tuple[int, int]
    factor: float
    pixel_size: float | None
    n_transcripts: int

    @property
    def model_shape(self) -> tuple[int, int]:
        """Shape of the inputs in the model's frame."""
        return tuple(self.inputs.shape[1:])

    def to_model_frame(self, arr: np.ndarray, *, order: int) -> np.ndarray:
        """Resample an image-frame array to the model frame (no-op without rescaling)."""
        return arr if self.factor == 1.0 else _resize(arr, self.model_shape, order=order)

    def to_image_frame(self, arr: np.ndarray, *, order: int) -> np.ndarray:
        """Resample a model-frame array back to the image frame (no-op without rescaling)."""
        return arr if self.factor == 1.0 else _resize(arr, self.shape, order=order)


def prepare_inputs(
    sdata: sd.SpatialData,
    *,
    image_key: str | None,
    points_key: str | None,
    channels: Sequence[str | int] | None = None,
    model_channels: Sequence[str] | None = None,
    sigma: float,
    rna_mode: str = "sum",
    rna_scale: float | str = 1.0,
    norm: tuple[float, float] = (1.0, 99.8),
    target_pixel_size: float | None = None,
    pixel_size: float | None = None,
) -> PreparedInputs:
    """Build ``[I, G]`` for one image: whole-image normalised channels plus the RNA location map (Eq. 5).

    The image is loaded into memory (numpy); each channel is normalised by percentiles of the whole
    image. When both the image's pixel size (``pixel_size``, else read from its transformation) and
    ``target_pixel_size`` are known and differ, the image is resampled (bilinear, anti-aliased when
    shrinking) and the transcripts scaled to the target pixel size, so the network sees cells at the
    size it was trained on.
    """
    from ..pp import normalize_array, rna_location_map_array
    from ..pp._normalize import warn_missing_pixels

    image_key, image = get_image(sdata, image_key)
    image = _select_channels(image_key, image, channels, model_channels=model_channels)
    names = [str(c) for c in image.coords["c"].values]
    h, w = image.sizes["y"], image.sizes["x"]
    pixel_size = check_pixel_size(pixel_size)
    own = pixel_size if pixel_size is not None else image_pixel_size(image)
    factor = _zoom(own, target_pixel_size, image_key=image_key, shape=(h, w))
    new_shape = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
    if factor != 1.0:
        logger.info(
            "Image %r: pixel size %.4g, model %.4g: resampling %d x %d -> %d x %d px",
            image_key, own, target_pixel_size, h, w, *new_shape,
        )  # fmt: skip
    elif own is None and target_pixel_size is not None:
        logger.info("Pixel size of %r unknown; using it as is (model trained at %.4g).", image_key, target_pixel_size)

    data = np.asarray(image.data.compute() if hasattr(image.data, "compute") else image.data)
    warn_missing_pixels(data, image_key)
    chans = [normalize_array(ch, norm[0], norm[1]) for ch in data]
    chans = [_resize(ch, new_shape, order=1) if factor != 1.0 else ch for ch in chans]

    points_key = get_points(sdata, points_key)[0]
    tx = transcripts_to_pixels(sdata, points_key, image_key)
    # Pixel i covers [i, i + 1), so a zoom of the grid multiplies coordinates by the same factor per axis.
    x = tx["x"].to_numpy() * (new_shape[1] / w)
    y = tx["y"].to_numpy() * (new_shape[0] / h)
    if len(tx) == 0:
        logger.warning("No transcripts on image %r: the RNA location map is empty.", image_key)
    rna = rna_location_map_array(x, y, new_shape, sigma=sigma, mode=rna_mode, scale=rna_scale)
    inputs = np.stack([*chans, np.asarray(rna, dtype=np.float32)]).astype(np.float32, copy=False)
    return PreparedInputs(
        inputs=inputs,
        image_key=image_key,
        points_key=points_key,
        channels=names,
        shape=(h, w),
        factor=new_shape[0] / h if factor != 1.0 else 1.0,
        pixel_size=own,
        n_transcripts=len(tx),
    )


def _plain(value: Any) -> Any:
    """Make a value storable in AnnData ``uns`` (no ``None``; tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _model_record(model) -> dict:
    """Record the model for ``uns``: its name (file stem, ``"default"``) and weights hash, no local path."""
    record = model.describe()
    source = record.pop("source", None)
    record["name"] = os.path.splitext(os.path.basename(source))[0] if source else "in-memory"
    return record


def segment(
    sdata: sd.SpatialData,
    model: GeneSegNetModel | str | os.PathLike | None = None,
    image_key: str | None = None,
    points_key: str | None = None,
    *,
    key_added: str = DEFAULT_KEY,
    channels: Sequence[str | int] | None = None,
    tile: int = 256,
    overlap: float = 0.5,
    blending: Literal["mean", "gaussian"] = "mean",
    batch_size: int = 8,
    mask_threshold: float = 0.5,
    center_threshold: float = 0.5,
    nms_size: int = 3,
    min_area: int = 15,
    grow: bool = True,
    max_distance: float = 8.0,
    pixel_size: float | None = None,
    device: str = "auto",
    block_size: int | None = None,
    halo: int = 256,
    client: Any | None = None,
    overwrite: bool = False,
) -> None:
    """Segment cells with a trained GeneSegNet model from the nucleus image and the transcripts.

    The image channels are normalised over the whole image, the RNA location map (Eq. 5) is built
    from all transcripts, the network runs over overlapping tiles whose predictions are averaged
    per pixel (paper: 256 px, 50 % overlap), and cells are decoded from the confidence, centre and
    offset maps (Eq. 4, :func:`gsn.models.decode_instances`). If the image's pixel size differs from
    the model's, the image is resampled to the model's pixel size first and the labels are mapped
    back to the image's pixel grid. With ``grow=True`` (default) the decoded cells are then grown
    with the transcripts into whole cells (:func:`gsn.tl.grow_cells`): the network finds the cells
    and their cores, the RNA decides how far each reaches.

    Writes, for prefix ``key`` = ``key_added``:

    - ``<key>_labels``: cell labels on the image's pixel grid, with the image's transformations;
    - ``<key>_boundaries``: one polygon per cell (absent when no cell was found: spatialdata 0.7.3
      cannot store an empty shapes element; a WARNING then says what to check);
    - ``<key>_table``: cells x genes counts, linked to the boundaries; ``uns["genesegnet"]`` holds
      the run parameters and the model's identity;
    - ``<key>_cell_id``: a column on the transcripts (0 = outside every cell).

    Label value == polygon index == ``obs["cell_id"]``.

    Parameters
    ----------
    sdata
        SpatialData object with the image and the transcripts.
    model
        A trained :class:`gsn.models.GeneSegNetModel` (from :func:`gsn.tl.train`), the path of a
        saved one, or ``None``/``"default"`` for the model that ships with gsn.
    image_key, points_key
        Elements to use; may be omitted when there is exactly one of each.
    key_added
        Prefix of the elements written.
    channels
        Image channels to feed the network (names or indices). By default the model's channel
        names, or all channels if their number matches the model.
    tile, overlap
        Tile side in pixels and the fraction shared by neighbouring tiles along each axis.
    blending
        ``"mean"`` (the paper) or ``"gaussian"`` (tile edges down-weighted); see
        :func:`gsn.models.predict_maps`.
    batch_size
        Tiles per forward pass.
    mask_threshold, center_threshold
        Thresholds on the confidence map and on centre peaks (0.5 in the paper).
    nms_size
        Non-maximum-suppression window for centre peaks, in pixels.
    min_area
        Cells smaller than this many pixels (in the model's pixel frame) are dropped.
    grow
        Grow the decoded cells into whole cells with the transcripts (see :func:`gsn.tl.grow_cells`).
    max_distance
        With ``grow``: how far (microns; pixels are taken as 0.2 µm when the size is unknown) a
        cell may reach beyond the decoded cell.
    pixel_size
        Pixel size of the image, overriding the one read from its transformation.
    device
        Torch device; ``"auto"`` picks CUDA, then MPS, then CPU.
    block_size
        Segment the image in square blocks of this side (image pixels), each with a ``halo``, so
        memory is bounded by the block rather than the image (see :mod:`gsn.models._blocks`). By
        default images above 64 Mpx, or any image when ``client`` is given, go block by block in
        4096 px blocks; smaller images are done in one piece.
    halo
        Context around each block in image pixels; must exceed the largest cell's diameter, since a
        cell is decoded whole by the block that holds its centroid.
    client
        A ``dask.distributed.Client``: blocks run as tasks on its cluster (identical results to a
        single process). The model and each block's image window are sent to the workers.
    overwrite
        Replace existing elements and the points column of the same names.
    """
    from ..models import as_model, resolve_device
    from ._cells import _check_outputs, _default_points, write_segmentation

    pixel_size = check_pixel_size(pixel_size)
    dev = resolve_device(device)  # a missing GPU is reported before anything is computed
    model = as_model(model)
    if _default_points(sdata, points_key) is None:
        raise ValueError("The SpatialData object has no points element: GeneSegNet needs the transcripts.")
    # Fail before the expensive part if the outputs exist.
    _check_outputs(sdata, key_added, _default_points(sdata, points_key), overwrite=overwrite, with_labels=True)

    t0 = time.perf_counter()
    predict = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "blending": blending}
    decode = {"mask_threshold": mask_threshold, "center_threshold": center_threshold, "nms_size": nms_size,
              "min_area": min_area}  # fmt: skip
    _, probe = get_image(sdata, image_key)
    blockwise = block_size is not None or client is not None or probe.sizes["y"] * probe.sizes["x"] > _BLOCKWISE_PIXELS
    if blockwise:
        block_size = block_size or 4096
        dev = resolve_device(device)
        labels, prep = _segment_in_blocks(
            sdata, model, image_key=image_key, points_key=points_key, channels=channels, pixel_size=pixel_size,
            device=dev, predict=predict, decode=decode, block_size=block_size, halo=halo, client=client,
        )  # fmt: skip
    else:
        labels, prep, dev = _segment_whole(
            sdata, model, image_key=image_key, points_key=points_key, channels=channels, pixel_size=pixel_size,
            device=device, predict=predict, decode=decode,
        )  # fmt: skip
    growth = None
    if grow and labels.max() > 0:
        labels, growth = _grow(sdata, labels, prep, max_distance=max_distance)
    n_cells = int(np.count_nonzero(np.unique(labels)))
    seconds = time.perf_counter() - t0
    logger.info("GeneSegNet: %d cells on %r in %.1f s", n_cells, prep.image_key, seconds)
    if n_cells == 0:
        logger.warning(
            "GeneSegNet found no cell on image %r with points %r (image pixel size %s, model %s µm/px). Writing "
            "%r and %r without cells and no %r (spatialdata cannot store an empty shapes element). Check "
            "`image_key`/`points_key` and `channels`, the pixel size (`pixel_size=`), the model, and try lower "
            "`mask_threshold`/`center_threshold` (now %g/%g) or a smaller `min_area` (now %d).",
            prep.image_key, prep.points_key, "unknown" if prep.pixel_size is None else f"{prep.pixel_size:.4g}",
            model.config.pixel_size, Key.labels(key_added), Key.table(key_added), Key.boundaries(key_added),
            mask_threshold, center_threshold, min_area,
        )  # fmt: skip

    uns = _plain(
        {
            "method": "genesegnet",
            "model": _model_record(model),
            "channels": prep.channels,
            "tile": tile,
            "overlap": overlap,
            "blending": blending,
            "batch_size": batch_size,
            "mask_threshold": mask_threshold,
            "center_threshold": center_threshold,
            "nms_size": nms_size,
            "min_area": min_area,
            "grow": grow,
            "max_distance": max_distance if grow else None,
            "growth": growth,
            "image_pixel_size": prep.pixel_size,
            "rescale_factor": prep.factor,
            "n_transcripts": prep.n_transcripts,
            "device": str(dev),
            "block_size": block_size if blockwise else None,
            "halo": halo if blockwise else None,
            "seconds": seconds,
        }
    )
    write_segmentation(
        sdata, labels, image_key=prep.image_key, points_key=prep.points_key, key_added=key_added,
        overwrite=overwrite, uns=uns,
    )  # fmt: skip


def _segment_whole(sdata, model, *, image_key, points_key, channels, pixel_size, device, predict, decode):
    """Segment the whole image in one piece: inputs, averaged maps and decoding all in memory."""
    from ..models import decode_instances, predict_maps, resolve_device

    cfg = model.config
    prep = prepare_inputs(
        sdata, image_key=image_key, points_key=points_key, channels=channels, model_channels=cfg.channels,
        sigma=cfg.sigma, rna_mode=cfg.rna_mode, rna_scale=cfg.rna_scale, norm=(cfg.norm_low, cfg.norm_high),
        target_pixel_size=cfg.pixel_size, pixel_size=pixel_size,
    )  # fmt: skip
    dev = resolve_device(device)
    maps = predict_maps(model.net, prep.inputs, device=dev, **predict)
    del prep.inputs  # free the inputs before decoding
    labels = decode_instances(maps.mask, maps.center, maps.offsets, **decode)
    del maps
    if prep.factor != 1.0:
        from skimage.segmentation import relabel_sequential

        # Shrinking can drop a tiny cell altogether; relabel so ids stay 1..n.
        labels = relabel_sequential(prep.to_image_frame(labels, order=0))[0].astype(np.int32)
    return labels, prep, dev


def _grow(sdata, labels, prep, *, max_distance):
    """Grow decoded cells into whole cells with the transcripts (image pixel frame)."""
    from ..models._growth import grow_labels

    tx = transcripts_to_pixels(sdata, prep.points_key, prep.image_key)
    codes = tx["gene"].cat.codes.to_numpy(np.int64)
    grown, report = grow_labels(
        labels, tx["x"].to_numpy(), tx["y"].to_numpy(), codes, pixel_size=prep.pixel_size,
        max_distance=max_distance,
    )  # fmt: skip
    return grown, report.as_dict()


def check_pixel_size(pixel_size: Any, argument: str = "pixel_size") -> float | None:
    """``None`` or a finite positive number of microns per pixel; anything else is an error naming the argument."""
    if pixel_size is None:
        return None
    if isinstance(pixel_size, bool) or not isinstance(pixel_size, int | float | np.integer | np.floating):
        raise TypeError(f"`{argument}` must be a number of microns per pixel or None, got {pixel_size!r}.")
    if not np.isfinite(pixel_size) or pixel_size <= 0:
        raise ValueError(f"`{argument}` must be a positive number of microns per pixel, got {pixel_size!r}.")
    return float(pixel_size)


def _zoom(own: float | None, target: float | None, *, image_key: str = "image", shape=None) -> float:
    """Model pixels per image pixel: 1 unless both pixel sizes are known and differ; refuses absurd factors."""
    if own is not None and target is not None and abs(own / target - 1) > _PIXEL_SIZE_RTOL:
        factor = own / target
        if not 1 / MAX_ZOOM <= factor <= MAX_ZOOM:
            size = (
                ""
                if shape is None
                else (f" ({shape[0]} x {shape[1]} px -> {round(shape[0] * factor)} x {round(shape[1] * factor)} px)")
            )
            raise ValueError(
                f"Image {image_key!r} has pixel size {own:.4g} and the model {target:.4g} (microns per pixel): a "
                f"resampling by {factor:.4g}x{size}, beyond the {MAX_ZOOM:g}x gsn accepts. Check `pixel_size=` and the "
                "image's transformation to microns, or use a model trained at a closer pixel size."
            )
        return factor
    return 1.0


def _segment_in_blocks(
    sdata, model, *, image_key, points_key, channels, pixel_size, device, predict, decode, block_size, halo, client
):
    """Blocks with halos, here or on a dask cluster; whole-image levels and RNA scale computed once."""
    from .._settings import settings
    from ..pp import percentiles
    from ..pp._normalize import warn_missing_pixels
    from ..pp._rna_map import auto_scale
    from ._segment_blocks import BlockSegmenter, segment_blockwise

    cfg = model.config
    image_key, image = get_image(sdata, image_key)
    image = _select_channels(image_key, image, channels, model_channels=cfg.channels)
    h, w = image.sizes["y"], image.sizes["x"]
    own = pixel_size if pixel_size is not None else image_pixel_size(image)
    factor = _zoom(own, cfg.pixel_size, image_key=image_key, shape=(h, w))
    warn_missing_pixels(image.data, image_key)
    levels = [percentiles(image.data[i], cfg.norm_low, cfg.norm_high) for i in range(image.sizes["c"])]
    points_key = get_points(sdata, points_key)[0]
    tx = transcripts_to_pixels(sdata, points_key, image_key)
    order = np.argsort(tx["y"].to_numpy(), kind="stable")
    x, y = tx["x"].to_numpy()[order], tx["y"].to_numpy()[order]
    rna_scale = cfg.rna_scale
    if cfg.rna_mode == "sum" and rna_scale == "auto":
        model_shape = (max(1, int(round(h * factor))), max(1, int(round(w * factor))))
        rna_scale = auto_scale(x * factor, y * factor, model_shape, sigma=cfg.sigma, chunks=4096)
    segmenter = BlockSegmenter(
        model=model, image=image.data, levels=levels, x=x, y=y, factor=factor, rna_scale=float(rna_scale),
        predict={**predict, "device": device}, decode=decode,
    )  # fmt: skip
    logger.info("Segmenting %r in %d px blocks with a %d px halo%s", image_key, block_size, halo,
                " on a dask cluster" if client is not None else "")  # fmt: skip
    labels = segment_blockwise(segmenter, (h, w), block_size=block_size, halo=halo, client=client,
                               progress=settings.progress)  # fmt: skip
    prep = PreparedInputs(
        inputs=np.zeros((0, 0, 0), np.float32), image_key=image_key, points_key=points_key,
        channels=[str(c) for c in image.coords["c"].values], shape=(h, w), factor=factor, pixel_size=own,
        n_transcripts=len(tx),
    )  # fmt: skip
    return labels, prep

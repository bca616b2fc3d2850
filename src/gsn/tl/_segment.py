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

from .._constants import DEFAULT_KEY, UNS_KEY, Key
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
    chans = np.stack([normalize_array(ch, norm[0], norm[1]) for ch in data])
    if factor != 1.0:
        from ..blockwise import Window
        from ..models._frames import Frames, resample_window

        frames = Frames((h, w), new_shape)
        chans = resample_window(chans, Window(0, h, 0, w), Window(0, new_shape[0], 0, new_shape[1]), frames)

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
    overlap: float = 0.25,
    blending: Literal["mean", "gaussian"] = "gaussian",
    batch_size: int = 8,
    mask_threshold: float = 0.35,
    center_threshold: float = 0.15,
    nms_size: int = 3,
    min_area: int = 15,
    grow: bool = True,
    max_distance: float = 8.0,
    missed_nuclei: bool = True,
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
    and their cores, the RNA decides how far each reaches. Decoded cells that already are whole
    cells (they hold at least 0.6 of the transcripts, as the default model's do) are eroded by
    1.5 µm to their cores and regrown, so the transcripts redraw their borders; nucleus-sized cells
    (a model trained on nuclei) are grown outwards. The decision is stored in
    ``uns["genesegnet"]["growth"]["kind"]``.

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
        Tile side in pixels and the fraction shared by neighbouring tiles along each axis. The default,
        25 % with ``blending="gaussian"``, runs the network on about half the tiles of the paper's
        50 % with the mean, at the same accuracy on synthetic truth (``benchmarks/bench_speed_scale.py``,
        part 2: matched IoU 0.727 vs 0.725, F1 0.983 vs 0.967; 0.978 F1 agreement with the paper's
        setting on the Xenium crop, in 0.56x its inference time). ``overlap=0.5, blending="mean"`` is
        the paper's setting.
    blending
        ``"gaussian"`` (tile edges, where the network sees least context, down-weighted: no seams at
        a small overlap) or ``"mean"`` (the paper); see :func:`gsn.models.predict_maps`.
    batch_size
        Tiles per forward pass.
    mask_threshold, center_threshold
        Thresholds on the confidence map and on centre peaks. The paper uses 0.5 for both (and so
        does :func:`gsn.models.decode_instances`); at 0.5 the first default model missed half the
        cells of the MERSCOPE crop (160 of the prior's 331). 0.35 and 0.15 were chosen by sweeps on
        the real crops, with synthetic truth as a check: the whole-cell default model's centre peaks
        are lower than a nucleus model's, and at 0.2 it called 329 cells on MERSCOPE where 0.15
        calls 372 at a lower MECR (see ``docs/benchmarks.md``, "Decoding thresholds").
    nms_size
        Non-maximum-suppression window for centre peaks, in pixels.
    min_area
        Cells smaller than this many pixels (in the model's pixel frame) are dropped.
    grow
        Grow the decoded cells into whole cells with the transcripts (see :func:`gsn.tl.grow_cells`).
    max_distance
        With ``grow``: how far (microns; pixels are taken as 0.2 µm when the size is unknown) a
        cell may reach beyond the decoded cell.
    missed_nuclei
        Also start cells from the nuclei of the stain that the network missed: nuclei of the
        watershed baseline (:func:`gsn.pp.watershed`, on the model's first channel) that no decoded
        cell comes within 2 px of; they are grown like the decoded cells. Decoded cells are never
        changed by it. With the first default model (nucleus-sized cells) it added 104 cells to 773
        on the Xenium crop and 42 to 315 on MERSCOPE, each with more transcripts in cells at a lower
        MECR; the whole-cell default model's cells cover the nuclei around them, and it adds none on
        Xenium and 7 on MERSCOPE (docs/benchmarks.md, "Whole cells").
    pixel_size
        Pixel size of the image, overriding the one read from its transformation.
    device
        Torch device; ``"auto"`` picks CUDA, then MPS, then CPU.
    block_size
        Every step runs block by block over square blocks of this side (default 1024 px, in the
        pixels of the frame the step runs in: the model's for inference and decoding, the image's for
        growth and the cells), each reading a ``halo`` of context, so memory is bounded by the block,
        not the image, and the result does not depend on the block size (the network's tiles, the
        centres and every cell are those of a whole-image run). Images smaller than a block are one
        block.
    halo
        Context around each block in image pixels; must exceed the largest cell's diameter (a WARNING
        says when a cell was cut by it).
    client
        A ``dask.distributed.Client``: blocks run as tasks on its cluster (identical results to a
        single process). The model is sent to each worker once; each block's window is cut here.
    overwrite
        Replace existing elements and the points column of the same names.
    """
    from ..models import as_model, resolve_device
    from ._cells import _check_outputs, _default_points

    pixel_size = check_pixel_size(pixel_size)
    resolve_device(device)  # a missing GPU is reported before anything is computed
    model = as_model(model)
    if _default_points(sdata, points_key) is None:
        raise ValueError("The SpatialData object has no points element: GeneSegNet needs the transcripts.")
    # Fail before the expensive part if the outputs exist.
    _check_outputs(sdata, key_added, _default_points(sdata, points_key), overwrite=overwrite, with_labels=True)
    from ..blockwise import Scratch, block_options, warm_up

    block_size, halo = block_options(block_size, halo)
    warm_up(client)

    t0 = time.perf_counter()
    options = {"tile": tile, "overlap": overlap, "batch_size": batch_size, "blending": blending}
    decode = {"mask_threshold": mask_threshold, "center_threshold": center_threshold, "nms_size": nms_size,
              "min_area": min_area}  # fmt: skip
    with Scratch.shared_with(client, sdata.path) as scratch:
        run = decode_blockwise(
            sdata, model, image_key=image_key, points_key=points_key, channels=channels, pixel_size=pixel_size,
            device=device, options=options, decode=decode, block_size=block_size, halo=halo, client=client,
            scratch=scratch,
        )  # fmt: skip
        source, growth, cells_halo, n_added = run.labels, None, halo, 0
        if missed_nuclei:
            from ._anchors import add_missed_nuclei

            with run.phases("missed nuclei"):
                source, n_added = add_missed_nuclei(run, block_size=block_size, halo=halo, client=client,
                                                    scratch=scratch)  # fmt: skip
            logger.info("Added %d nuclei of the stain that the network missed", n_added)
        if grow and run.n_cells + n_added:
            with run.phases("growth"):
                source, growth, grown_halo = _grow(run, source, max_distance=max_distance, block_size=block_size,
                                                   client=client, scratch=scratch)  # fmt: skip
            cells_halo = max(halo, grown_halo)
        uns = _plain(
            {
                "method": "genesegnet",
                "model": _model_record(model),
                "channels": run.channels,
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
                "missed_nuclei": missed_nuclei,
                "n_missed_nuclei": n_added,
                "growth": growth,
                "image_pixel_size": run.pixel_size,
                "rescale_factor": run.frames.zoom[0] if not run.frames.identity else 1.0,
                "n_transcripts": run.index.n_inside,
                "device": run.device,
                "runner": run.runner,
                "block_size": block_size,
                "halo": halo,
                "seconds": run.phases,
            }
        )
        n_cells = _write_result(sdata, run, source, uns, key_added=key_added, block_size=block_size, halo=cells_halo,
                                client=client, overwrite=overwrite, scratch=scratch)  # fmt: skip
    logger.info("GeneSegNet: %d cells on %r in %.1f s", n_cells, run.image_key, time.perf_counter() - t0)
    if n_cells == 0:
        logger.warning(
            "GeneSegNet found no cell on image %r with points %r (image pixel size %s, model %s µm/px). Wrote "
            "%r and %r without cells and no %r (spatialdata cannot store an empty shapes element). Check "
            "`image_key`/`points_key` and `channels`, the pixel size (`pixel_size=`), the model, and try lower "
            "`mask_threshold`/`center_threshold` (now %g/%g) or a smaller `min_area` (now %d).",
            run.image_key, run.points_key, "unknown" if run.pixel_size is None else f"{run.pixel_size:.4g}",
            model.config.pixel_size, Key.labels(key_added), Key.table(key_added), Key.boundaries(key_added),
            mask_threshold, center_threshold, min_area,
        )  # fmt: skip


class _Phases(dict):
    """Seconds per phase of a run: ``with phases("inference"): ...`` adds to ``phases["inference"]``."""

    def __call__(self, name: str):
        from contextlib import contextmanager

        @contextmanager
        def timed():
            start = time.perf_counter()
            try:
                yield
            finally:
                self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)

        return timed()


@dataclass
class DecodeRun:
    """What :func:`decode_blockwise` made: decoded cells (model frame) and what later passes reuse."""

    image_key: str
    points_key: str
    image: Any  # the image element (its transformations place the results)
    channels: list[str]
    frames: Any  # gsn.models._frames.Frames
    pixel_size: float | None
    index: Any  # TranscriptIndex in the image's pixel frame
    decoded: Any  # Raster (model frame), cells with their centres' ids
    labels: Any  # the decoded cells read by image-frame windows
    n_cells: int
    max_diameter: int  # largest cell's bounding box side (image pixels), for the later halos
    device: str
    runner: dict
    phases: _Phases


def decode_blockwise(
    sdata, model, *, image_key, points_key, channels, pixel_size, device, options, decode, block_size, halo, client,
    scratch,
) -> DecodeRun:  # fmt: skip
    """Network maps, centres and decoded cells, block by block (the whole image is one block when small).

    Whole-image constants come first (normalisation levels, the RNA map's scale, the model frame);
    then three passes over the model-frame grid: maps (:func:`gsn.models._kernels.maps_kernel`) into a
    raster, centres (one list for the whole image, ids by position) and decoding into a raster.
    """
    from .._settings import settings
    from .._transcripts import points_to_pixel_matrix
    from ..blockwise import TranscriptIndex, Window, block_grid, map_blocks, materialize
    from ..models import TileRunner
    from ..models._frames import Frames, ImageFrameLabels, prefilter_margin
    from ..models._inference import _check_options, input_window
    from ..models._kernels import (
        CENTER_MARGIN,
        InputSpec,
        centers_kernel,
        decode_kernel,
        maps_kernel,
        rna_sample_kernel,
    )
    from ..pp import percentiles
    from ..pp._normalize import warn_missing_pixels
    from ..pp._rna_map import _auto_scale_of_samples, kernel_radius

    _check_options(options["tile"], options["overlap"], options["batch_size"], options["blending"])
    progress = settings.progress
    phases = _Phases()
    cfg = model.config
    image_key, image = get_image(sdata, image_key)
    element = image
    image = _select_channels(image_key, image, channels, model_channels=cfg.channels)
    h, w = image.sizes["y"], image.sizes["x"]
    own = pixel_size if pixel_size is not None else image_pixel_size(image)
    zoom = _zoom(own, cfg.pixel_size, image_key=image_key, shape=(h, w))
    frames = Frames.from_zoom((h, w), zoom)
    if not frames.identity:
        logger.info("Image %r: pixel size %.4g, model %.4g: the network sees it at %d x %d px",
                    image_key, own, cfg.pixel_size, *frames.model_shape)  # fmt: skip
    elif own is None and cfg.pixel_size is not None:
        logger.info("Pixel size of %r unknown; using it as is (model trained at %.4g).", image_key, cfg.pixel_size)
    data = image.data
    warn_missing_pixels(data, image_key)
    levels = tuple(percentiles(data[i], cfg.norm_low, cfg.norm_high) for i in range(image.sizes["c"]))
    points_key, points = get_points(sdata, points_key)
    matrix = points_to_pixel_matrix(points, image, points_key=points_key, image_key=image_key)
    with phases("transcripts"):
        index = TranscriptIndex.from_points(points, matrix, (h, w), points_key=points_key, image_key=image_key,
                                            scratch=scratch)  # fmt: skip
    if index.n_inside == 0:
        logger.warning("No transcripts on image %r: the RNA location map is empty.", image_key)

    mshape = frames.model_shape
    (zy, zx), radius = frames.zoom, kernel_radius(cfg.sigma)
    mblock = block_size  # the model frame has its own grid of the same block size (the network is most of the time)
    blocks = block_grid(mshape, mblock)

    def model_transcripts(window: Window, margin: int) -> tuple[np.ndarray, np.ndarray]:
        # image-frame window around a model-frame one (with one pixel to spare for rounding)
        iw = Window(int(np.floor(window.y0 / zy)), int(np.ceil(window.y1 / zy)), int(np.floor(window.x0 / zx)),
                    int(np.ceil(window.x1 / zx)))  # fmt: skip
        t = index.window(iw, margin=(margin + 1) / min(zy, zx))
        return t.x * zx, t.y * zy

    rna_scale = cfg.rna_scale
    if cfg.rna_mode == "sum" and rna_scale == "auto":
        step = max(1, int(np.ceil(np.sqrt(mshape[0] * mshape[1] / 4_000_000))))
        samples = map_blocks(
            rna_sample_kernel, blocks, lambda b: (*model_transcripts(b, radius), b, cfg.sigma, step), progress=False
        )
        rna_scale = _auto_scale_of_samples(np.concatenate(samples))
    spec = InputSpec(frames, levels, cfg.sigma, cfg.rna_mode, float(rna_scale), options["tile"], options["overlap"],
                     options["batch_size"], options["blending"])  # fmt: skip
    margin = prefilter_margin(frames)

    def maps_inputs(block):
        window = input_window(block, mshape, options["tile"], options["overlap"])
        source = frames.image_window_for_model(window, margin)
        raw = data[(slice(None), *source.slices)]
        raw = materialize(raw)
        x, y = model_transcripts(window, radius)
        return raw, source, x, y, window, block

    maps = scratch.raster("maps", (4, *mshape), np.float32, chunk=mblock)
    runner = TileRunner(model.net, device)
    logger.info("Segmenting %r (%d x %d px; model frame %d x %d) in %d block(s)%s", image_key, h, w, *mshape,
                len(blocks), " on a dask cluster" if client is not None else "")  # fmt: skip
    try:
        with phases("inference"):
            map_blocks(maps_kernel, blocks, maps_inputs, shared=(runner, spec), write=maps, client=client,
                       workers_read=scratch.shared, progress=progress, desc="inference")  # fmt: skip
        runner_info = runner.describe()
    finally:
        runner.close()

    nms = decode["nms_size"]
    if nms < 1:
        raise ValueError(f"nms_size must be >= 1, got {nms}.")
    cm = nms // 2 + CENTER_MARGIN

    def center_inputs(block):
        window = block.grow(cm, mshape)
        return maps.read(window, planes=1), window, block, decode["center_threshold"], nms

    with phases("centres"):
        found = map_blocks(centers_kernel, blocks, center_inputs, client=client, workers_read=scratch.shared,
                           progress=False)  # fmt: skip
    centers = np.concatenate(found) if found else np.zeros((0, 2))
    centers = centers[np.lexsort((centers[:, 1], centers[:, 0]))]  # ids follow position, whatever the blocks
    ids = np.arange(1, len(centers) + 1, dtype=np.int32)
    mhalo = max(16, int(np.ceil(halo * min(zy, zx))))

    def decode_inputs(block):
        window = block.grow(mhalo, mshape)
        near = window.grow(mhalo, mshape)
        lo, hi = np.searchsorted(centers[:, 0], [near.y0, near.y1])
        sel = np.arange(lo, hi)[(centers[lo:hi, 1] >= near.x0) & (centers[lo:hi, 1] < near.x1)]
        planes = maps.read(window, planes=[0, 2, 3])
        return planes[0], planes[1:], window, block, mshape, centers[sel], ids[sel], decode

    decoded = scratch.raster("decoded", mshape, np.int32, chunk=mblock)
    with phases("decoding"):
        cut = map_blocks(decode_kernel, blocks, decode_inputs, write=decoded, client=client,
                         workers_read=scratch.shared, progress=progress, desc="decoding")  # fmt: skip
    if sum(cut):
        logger.warning(
            "%d cell(s) reach beyond the %d px halo of their block; they may be cut. Pass a larger `halo`.",
            sum(cut), halo,
        )  # fmt: skip

    return DecodeRun(
        image_key=image_key, points_key=points_key, image=element, channels=[str(c) for c in image.coords["c"].values],
        frames=frames, pixel_size=own, index=index, decoded=decoded, labels=ImageFrameLabels(decoded, frames),
        n_cells=len(centers), max_diameter=0, device=str(runner.device), runner=runner_info, phases=phases,
    )  # fmt: skip


def _grow(run: DecodeRun, anchors, *, max_distance, block_size, client, scratch):
    """Grow the anchors (decoded cells, missed nuclei) into whole cells with the transcripts, block by block."""
    from .._settings import settings
    from ..models._growth import grow_blockwise

    source, report, halo = grow_blockwise(
        anchors, run.index, pixel_size=run.pixel_size, max_distance=max_distance, scratch=scratch,
        block_size=block_size, client=client, progress=settings.progress,
    )  # fmt: skip
    return source, report.as_dict(), halo


def _write_result(
    sdata, run: DecodeRun, source, uns, *, key_added, block_size, halo, client, overwrite, scratch
) -> int:
    """Run the cells pass over the final labels, then write everything: labels, polygons, table, points column."""
    from spatialdata.models import Labels2DModel

    from ._cells import _segmentation_elements, _write, labels_from_raster, settle_labels

    shape = run.frames.image_shape
    out = scratch.raster("labels", shape, np.int32, chunk=block_size, keep=True)
    params = {"image": run.image_key, **uns}
    with run.phases("cells"):
        boundaries, table, points_key, ids, lut = _segmentation_elements(
            sdata, source, run.image, labels_name=Key.labels(key_added), points_key=run.points_key, key=key_added,
            uns=params, index=run.index, out=out, renumber=True, block_size=block_size, halo=halo, client=client,
            scratch=scratch,
        )  # fmt: skip
    table.uns[UNS_KEY]["seconds"] = dict(run.phases)  # every phase but the writing itself, which is logged
    labels = labels_from_raster(out, lut)
    element = Labels2DModel.parse(labels, dims=("y", "x"), transformations=get_transformation(run.image, get_all=True))
    elements = {Key.labels(key_added): element, Key.boundaries(key_added): boundaries, Key.table(key_added): table}
    with run.phases("write"):
        _write(sdata, key_added, elements, points_key, ids, overwrite=overwrite, image_key=run.image_key)
        settle_labels(sdata, Key.labels(key_added), out)
    logger.info("Seconds per phase: %s", dict(run.phases))
    return table.n_obs


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

"""Training a GeneSegNet model on one or several SpatialData objects."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import spatialdata as sd

from .._elements import get_labels
from .._logging import logger
from ._segment import prepare_inputs

if TYPE_CHECKING:
    from ..models import GeneSegNetModel


def train(
    sdata: sd.SpatialData | Sequence[sd.SpatialData],
    *,
    labels_key: str,
    image_key: str | None = None,
    points_key: str | None = None,
    channels: Sequence[str | int] | None = None,
    sigma: float = 7.0,
    rna_mode: str = "sum",
    rna_scale: float | str = 1.0,
    crop_size: int = 256,
    epochs: int = 10,
    steps_per_epoch: int = 25,
    batch_size: int = 8,
    lr: float | None = None,
    weight_decay: float = 1e-5,
    widths: Sequence[int] | Literal["auto"] = "auto",
    scale_range: tuple[float, float] = (0.75, 1.25),
    rotate: bool = True,
    flip: bool = True,
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    center_sigma: float = 2.0,
    norm_percentiles: tuple[float, float] = (1.0, 99.8),
    pixel_size: float | None = None,
    model: GeneSegNetModel | str | os.PathLike | None = "default",
    device: str = "auto",
    seed: int = 0,
    max_rounds: int = 1,
    iou_stop: float = 0.93,
    prior: Literal["auto", "nuclei", "cells"] = "auto",
    grow_prior: bool = False,
    refine: Literal["auto", "grow", "levelset", "none"] | bool = "auto",
    max_distance: float = 8.0,
    smooth: bool = False,
    nu: float = 1.0,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    warm_start: bool = True,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> GeneSegNetModel:
    """Train a GeneSegNet model on cell labels (paper Eq. 2 and "Training Details").

    For every sample the inputs ``[I, G]`` are built once (whole-image normalised stain channels
    and the RNA location map with Gaussian width ``sigma``); then each step draws ``batch_size``
    random ``crop_size`` crops with scale jitter, flips and rotations, derives the confidence,
    centre and offset targets from the cropped labels (Eqs. 10-12) and takes an AdamW step on the
    loss of Eq. 15. This is one round of the paper's recursive training; the labels are typically
    a noisy prior segmentation (watershed of the nuclei, or an imported one).

    The defaults (10 epochs of 25 steps, 250 AdamW steps) are a short run by the paper's standard
    (500 epochs per round on a GPU), but not on a CPU: with the slim network that ``widths="auto"``
    picks there, one step took 6-15 s on two shared cores (1800 x 2400 px Xenium crop), so one
    round takes 25-60 min. On a CPU, fine-tune the default model (``model=``) with a few dozen
    steps on smaller crops; train new models on a GPU. Raise ``epochs`` for better models.

    The network learns what the labels are. From nuclei it learns to find nuclei (cell cores),
    and :func:`gsn.tl.segment` grows them into whole cells with the transcripts; from whole cells
    it learns whole cells. ``prior`` says (or detects) which, ``grow_prior`` grows nuclei into
    whole cells before training instead.

    Parameters
    ----------
    sdata
        One SpatialData object, or a list of them (several samples, e.g. fields of view).
    labels_key
        Labels element with the training cells (or nuclei, see ``prior``), on the image's pixel grid.
    image_key, points_key
        Image and transcripts; may be omitted when each object holds exactly one.
    channels
        Image channels to use (names or indices); all channels by default. The model remembers
        their names and :func:`gsn.tl.segment` selects the same ones.
    sigma
        Width in pixels of the RNA location map Gaussians (7 or 9 in the paper).
    rna_mode, rna_scale
        How the RNA location map combines Gaussians (``"sum"``, Eq. 5, or ``"max"``) and the divisor
        of the sum before clipping (``1``: Eq. 5; ``"auto"``: for dense data that saturate it); see
        :func:`gsn.pp.rna_location_map_array`.
    crop_size
        Side of the training crops in pixels (256 in the paper).
    epochs, steps_per_epoch
        Length of training; the mean loss of every epoch is kept in ``model.history``.
    batch_size
        Crops per step (8 in the paper).
    lr, weight_decay
        AdamW learning rate and weight decay (1e-3 and 1e-5 in the paper); the learning rate warms
        up linearly and then follows a cosine decay. ``lr=None``: 1e-3 for fresh weights,
        :data:`FINE_TUNE_LR` when starting from a trained model (a large rate first unlearns it).
    widths
        Channel widths of the four U-Net scales. ``"auto"``: the paper's ``(32, 64, 128, 256)``
        (``gsn.models.DEFAULT_WIDTHS``) when training on a CUDA GPU, else the 4x cheaper
        ``gsn.models.SLIM_WIDTHS = (16, 32, 64, 128)``.
    scale_range, rotate, flip
        Augmentation: zoom range, free rotations, mirroring.
    loss_weights
        Weights of the confidence, centre and offset terms of Eq. 15.
    center_sigma
        Width in pixels of the centre target peaks.
    norm_percentiles
        Percentiles mapped to 0 and 1 when normalising the image channels.
    pixel_size
        Pixel size (e.g. microns) the model works at. By default that of the first sample, read from
        the transformation of its image; other samples of a known, different pixel size are
        resampled to it.
    model
        The starting point. ``"default"`` (default): the model that ships with gsn, fine-tuned on
        these labels: it already finds whole cells, so a few hundred steps on a CPU adapt it to
        the sample, where fresh weights need thousands; it is used when the image has as many
        channels as the model (one nucleus stain) and ``widths`` is left at ``"auto"``, and fresh
        weights are used otherwise (logged). A :class:`gsn.models.GeneSegNetModel` or a saved
        model's path: continue training that model (it is trained in place). ``None``: fresh weights.
        With a starting model its channels, widths, RNA map settings, normalisation and pixel size
        are used and the corresponding arguments are ignored.
    device
        Torch device; ``"auto"`` picks CUDA, then MPS, then CPU.
    seed
        Seed for the weight initialisation, crops and augmentation. On the CPU, the same seed, data,
        settings and number of torch threads (``torch.get_num_threads()``) give bit-identical weights.
        Another number of threads changes the order of floating-point sums inside torch's kernels, so
        the weights differ in the last digits (losses agree to about 1e-5 relative after a few steps)
        and may drift further over long runs; set ``torch.set_num_threads(n)`` to reproduce a run exactly.
        GPU runs are reproducible only as far as the CUDA kernels are deterministic.
    max_rounds
        Rounds of recursive training (paper Eqs. 1-3, Algorithm 1). ``1`` (default): one round on
        ``labels_key``, no label update. Above 1: after each round the model predicts on the
        training images, the cells are decoded and updated (``refine``), and the result becomes the
        next round's labels; each round trains ``epochs x steps_per_epoch`` steps.
    iou_stop
        Stop once the mean over the cells of round t's labels of their best IoU against round t+1's
        labels exceeds this (0.93 in the paper), or after ``max_rounds``.
    prior
        What ``labels_key`` holds: ``"nuclei"``, ``"cells"`` (whole cells), or ``"auto"`` (default):
        nuclei when they hold less than 0.6 of the transcripts on the image (whole cells hold
        most; nuclei of the real crops 0.39-0.42), decided per sample and logged. A choice that
        disagrees with that fraction is warned about. Recorded as ``train_params["labels_kind"]``.
        :func:`gsn.tl.segment` judges the cells it decodes by the same rule: a model that draws
        whole cells has them eroded to their cores and regrown (:func:`gsn.tl.grow_cells`'s
        ``kind``).
    grow_prior
        Grow nucleus labels into whole cells with the transcripts (``max_distance``) before round 1,
        so the network learns whole cells. Off by default: fine-tuned for a few hundred CPU steps on
        grown cells, the network merged touching cells (Xenium crop: 519 cells against 715 when
        trained on the nuclei, MECR above the expansion curve; see ``docs/model.md``).
    refine
        How the network's cells become the next round's labels. ``"grow"``: erode the decoded cells
        by a few pixels and regrow them with the transcripts (the paper's level set acts on the
        binary mask and cannot grow cells, and regrowing full cells drifts outward); ``"levelset"``
        (or ``True``): the paper's Chan-Vese refinement (Eqs. 13-14, :func:`gsn.tl.refine_labels`);
        ``"none"`` (or ``False``): the decoded cells. ``"auto"`` (default): ``"grow"`` when the
        network learns whole cells, ``"levelset"`` when it learns nuclei (growing them would turn
        the next round's nuclei into cells).
    max_distance
        How far (microns) growth may reach beyond a nucleus or an anchor.
    smooth
        With ``refine="grow"``: also smooth the grown cells with the level set.
    nu, lambda1, lambda2
        Level-set weights (the paper's are all 1).
    warm_start
        ``True``: every round continues from the previous round's weights (cheaper); ``False``: every
        round restarts from freshly initialised weights, as the reference implementation.
    checkpoint
        File written after every round (weights, history, current labels, settings fingerprint).
    resume
        Continue an interrupted run from ``checkpoint``. Settings that differ from the checkpoint's
        raise a ``ValueError`` naming them (``max_rounds`` and ``iou_stop`` may change).

    Returns
    -------
    The trained :class:`gsn.models.GeneSegNetModel`. Save it with ``model.save(path)``. With
    ``max_rounds > 1``, ``model.rounds`` holds one record per round (``round``, ``loss``, ``mean_iou``,
    ``n_cells``, ``mean_area``, ``seconds``, ...; saved with the model and drawn by
    :func:`gsn.pl.training_history`), the epochs of ``model.history`` carry their ``round``, and
    ``model.labels`` holds the final refined labels per sample on the model's pixel grid (not saved;
    the SpatialData objects are never modified).

    Examples
    --------
    >>> import gsn
    >>> sdata = gsn.datasets.synthetic(shape=(256, 256))
    >>> model = gsn.tl.train(sdata, labels_key="prior_labels", widths=gsn.models.SLIM_WIDTHS, epochs=1,
    ...                      steps_per_epoch=2, batch_size=2, crop_size=128)  # doctest: +SKIP
    """
    import torch

    from ..models import Augmentation, GeneSegNetModel, ModelConfig, TrainingSample, train_network
    from ..models._recursive import check_training_labels, resolve_refine
    from ._segment import image_pixel_size

    if prior not in PRIORS:
        raise ValueError(f"`prior` must be one of {PRIORS}, got {prior!r}.")
    if refine != "auto":
        resolve_refine(refine)
    if not np.isfinite(max_distance) or max_distance <= 0:
        raise ValueError(f"`max_distance` must be a positive number of microns, got {max_distance!r}.")
    if checkpoint is not None:
        from ..models._recursive import check_checkpoint_path

        check_checkpoint_path(checkpoint)
    samples_in = [sdata] if isinstance(sdata, sd.SpatialData) else list(sdata)
    if not samples_in:
        raise ValueError("No SpatialData objects given.")
    if not all(isinstance(s, sd.SpatialData) for s in samples_in):
        raise TypeError("`sdata` must be a SpatialData object or a list of them.")

    widths_given = not (isinstance(widths, str) and widths == "auto")
    if isinstance(widths, str):
        if widths != "auto":
            raise ValueError(f"`widths` must be a sequence of integers or 'auto', got {widths!r}.")
        from ..models import DEFAULT_WIDTHS, SLIM_WIDTHS, resolve_device

        widths = DEFAULT_WIDTHS if resolve_device(device).type == "cuda" else SLIM_WIDTHS
    model = _starting_model(model, samples_in[0], image_key=image_key, channels=channels, widths_given=widths_given)
    if lr is None:
        lr = 1e-3 if model is None else FINE_TUNE_LR
    if model is not None:
        cfg = model.config
        sigma, pixel_size = cfg.sigma, cfg.pixel_size
        rna_mode, rna_scale = cfg.rna_mode, cfg.rna_scale
        norm_percentiles = (cfg.norm_low, cfg.norm_high)
        model_channels = cfg.channels
    else:
        model_channels = None
        if pixel_size is None:
            from .._elements import get_image

            pixel_size = image_pixel_size(get_image(samples_in[0], image_key)[1])

    samples, names, kinds = [], None, []
    for i, s in enumerate(samples_in):
        prep = prepare_inputs(
            s, image_key=image_key, points_key=points_key, channels=channels, model_channels=model_channels,
            sigma=sigma, rna_mode=rna_mode, rna_scale=rna_scale, norm=tuple(norm_percentiles),
            target_pixel_size=pixel_size,
        )  # fmt: skip
        if names is None:
            names = prep.channels
        elif prep.channels != names and len(prep.channels) != len(names):
            raise ValueError(f"Sample {i} has image channels {prep.channels}, sample 0 has {names}.")
        lkey, labels_el = get_labels(s, labels_key)
        labels = np.asarray(labels_el.values)
        if labels.shape != prep.shape:
            raise ValueError(
                f"Sample {i}: labels {lkey!r} of shape {labels.shape} are not on the pixel grid of image "
                f"{prep.image_key!r} {prep.shape}."
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"Sample {i}: labels {lkey!r} must be integers, got {labels.dtype}.")
        labels = check_training_labels(prep.to_model_frame(labels, order=0), name=f"Sample {i}: labels {lkey!r}")
        transcripts = _model_frame_transcripts(s, prep)
        px = _model_pixel_size(prep)
        labels, kind = _prepare_prior(labels, transcripts, px, prior=prior, grow=grow_prior, max_distance=max_distance,
                                      seed=seed, name=f"Sample {i}: labels {lkey!r}")  # fmt: skip
        kinds.append(kind)
        samples.append(TrainingSample(prep.inputs, labels, name=f"sample {i} ({prep.image_key!r})",
                                      transcripts=transcripts, pixel_size=px))  # fmt: skip
        logger.info("Sample %d: %d x %d px, %d cells, %d transcripts", i, *labels.shape, len(np.unique(labels)) - 1,
                    prep.n_transcripts)  # fmt: skip

    if not any(smp.labels.any() for smp in samples):
        raise ValueError(f"The training labels {labels_key!r} contain no cells.")
    if max_rounds < 1:
        raise ValueError(f"`max_rounds` must be >= 1, got {max_rounds}.")

    labels_kind = kinds[0] if len(set(kinds)) == 1 else "mixed"
    if refine == "auto":
        refine = "levelset" if labels_kind == "nuclei" else "grow"
    refine = resolve_refine(refine)

    def new_model(round_seed: int) -> GeneSegNetModel:
        # Seed the initialisation without touching the caller's global torch random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(round_seed)
            return GeneSegNetModel(copy.deepcopy(config))

    if model is None:
        config = ModelConfig(
            channels=list(names), widths=[int(w) for w in widths], sigma=float(sigma), rna_mode=rna_mode,
            rna_scale=rna_scale if isinstance(rna_scale, str) else float(rna_scale), center_sigma=float(center_sigma),
            norm_low=float(norm_percentiles[0]), norm_high=float(norm_percentiles[1]),
            pixel_size=None if pixel_size is None else float(pixel_size),
        )  # fmt: skip
        model = new_model(seed)
    else:
        config = copy.deepcopy(model.config)
        config.history, config.rounds, config.train_params = [], [], {}
    model.config.train_params = {
        "labels_key": labels_key,
        "n_samples": len(samples),
        "crop_size": crop_size,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "scale_range": list(scale_range),
        "rotate": rotate,
        "flip": flip,
        "loss_weights": list(loss_weights),
        "seed": seed,
        "prior": prior,
        "grow_prior": grow_prior,
        "labels_kind": labels_kind,
        "max_distance": max_distance,
    }
    train_kwargs = dict(
        epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, crop_size=crop_size, lr=lr,
        weight_decay=weight_decay, augmentation=Augmentation(tuple(scale_range), rotate, flip),
        loss_weights=tuple(loss_weights),
    )  # fmt: skip
    if max_rounds > 1 or resume or checkpoint is not None:
        from ..models._recursive import recursive_train

        model.config.train_params.update(max_rounds=max_rounds, iou_stop=iou_stop, refine=refine,
                                         smooth=smooth, nu=nu, lambda1=lambda1, lambda2=lambda2,
                                         warm_start=warm_start)  # fmt: skip
        fp_params = {k: v for k, v in model.config.train_params.items() if k not in ("max_rounds", "iou_stop")}
        fp_params.update(channels=list(config.channels), widths=list(config.widths), sigma=config.sigma,
                         rna_mode=config.rna_mode, rna_scale=config.rna_scale, pixel_size=config.pixel_size,
                         initial_model=model.identity if model.history or model.rounds else None)  # fmt: skip
        counter = iter(range(1, 10**9))
        model, _ = recursive_train(
            model, samples, max_rounds=max_rounds, iou_stop=iou_stop, refine=refine, max_distance=max_distance,
            smooth=smooth, nu=nu, lambda1=lambda1,
            lambda2=lambda2, warm_start=warm_start, checkpoint=checkpoint, resume=resume,
            fingerprint_params=fp_params, init_model=lambda: new_model(seed + next(counter)), seed=seed,
            device=device, **train_kwargs,
        )  # fmt: skip
        return model
    return train_network(model, samples, device=device, seed=seed, **train_kwargs)


FINE_TUNE_LR = 2e-4
"""Learning rate when ``train`` starts from a trained model and ``lr`` is not given."""

PRIORS = ("auto", "nuclei", "cells")


def _model_frame_transcripts(sdata: sd.SpatialData, prep) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transcripts on the model's pixel grid (column, row) with integer gene codes, for growing cells."""
    from .._transcripts import transcripts_to_pixels

    tx = transcripts_to_pixels(sdata, prep.points_key, prep.image_key)
    (h, w), (mh, mw) = prep.shape, prep.model_shape
    x = tx["x"].to_numpy(np.float64) * (mw / w)
    y = tx["y"].to_numpy(np.float64) * (mh / h)
    return x, y, tx["gene"].cat.codes.to_numpy(np.int64)


def _model_pixel_size(prep) -> float | None:
    """Microns per pixel of the model's grid (``None`` when the image's pixel size is unknown)."""
    return None if prep.pixel_size is None else prep.pixel_size / prep.factor


def _fraction_inside(labels: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    from ._metrics_core import pixel_index

    rows, cols, _ = pixel_index(x, y, labels.shape)
    return float(np.mean(labels[rows, cols] > 0)) if len(rows) else float("nan")


def _prepare_prior(labels, transcripts, pixel_size, *, prior, grow, max_distance, seed, name):
    """Round 1's labels and what they are (``"nuclei"`` or ``"cells"``); nuclei grown into cells if ``grow``."""
    from skimage.segmentation import relabel_sequential

    from ..models._growth import NUCLEI_FRACTION, grow_labels

    x, y, genes = transcripts
    frac = _fraction_inside(labels, x, y)
    looks_like = "nuclei" if frac < NUCLEI_FRACTION else "cells"
    if prior == "auto":
        prior = looks_like
        logger.info("%s hold %.0f%% of the transcripts: taken as %s%s.", name, 100 * frac, prior,
                    " and grown into whole cells" if prior == "nuclei" and grow else "")  # fmt: skip
    elif prior != looks_like and np.isfinite(frac):
        logger.warning(
            "%s hold %.0f%% of the transcripts, which looks like %s, but prior=%r was given.",
            name, 100 * frac, looks_like, prior,
        )  # fmt: skip
    if prior != "nuclei" or not grow or not labels.any() or len(x) == 0:
        return labels, prior
    if pixel_size is None:
        logger.warning("%s: pixel size unknown; growing with 0.2 µm per pixel.", name)
    grown, _ = grow_labels(labels, x, y, genes, pixel_size=pixel_size, max_distance=max_distance, seed=seed)
    return relabel_sequential(grown)[0].astype(np.int32, copy=False), "cells"


def _starting_model(model, sdata: sd.SpatialData, *, image_key, channels, widths_given: bool):
    """Resolve ``model``: the shipped model where it fits the image, a given model or file, or ``None`` (fresh)."""
    from .._elements import get_image
    from ..models import GeneSegNetModel, as_model

    if model is None or isinstance(model, GeneSegNetModel):
        return model
    if isinstance(model, str) and model == "default":
        if widths_given:
            logger.info("`widths` given: training a new network instead of fine-tuning the default model.")
            return None
        default = as_model("default")
        n_channels = len(channels) if channels is not None else get_image(sdata, image_key)[1].sizes["c"]
        if n_channels != len(default.config.channels):
            logger.info("The image has %d channels and the default model %d (%s): training from fresh weights.",
                        n_channels, len(default.config.channels), ", ".join(default.config.channels))  # fmt: skip
            return None
        return default
    return as_model(model)

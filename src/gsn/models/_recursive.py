"""Recursive training with label refinement (paper Eqs. 1-3, 13-14, 16; Algorithm 1): arrays in, model out.

Round ``t`` trains the network on labels ``Y(t)``; the trained network then predicts on the
training images, the predictions are decoded into cells (Eq. 4) and updated; the result is
``Y(t+1)``. The update regrows the decoded cells with the transcripts by default (from anchors
eroded by a few pixels: the paper's level set acts on the binary mask only and cannot grow cells,
and regrowing full cells drifts outward round after round); the paper's Chan-Vese level set
(Eqs. 13-14) is ``refine="levelset"``. The loop stops once the mean over the cells of ``Y(t)``
of their best IoU against ``Y(t+1)`` exceeds ``iou_stop`` (0.93 in the paper) or after
``max_rounds``. Nothing here knows about SpatialData; :func:`gsn.tl.train` prepares the arrays.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._logging import logger
from ._decode import decode_instances
from ._inference import predict_maps
from ._levelset import refine_label_image
from ._model import GeneSegNetModel, _config_from_dict
from ._training import TrainingSample, train_network

CHECKPOINT_FORMAT = "gsn.RecursiveTrainingCheckpoint"
CHECKPOINT_VERSION = 1
GIANT_CELL_FRACTION = 0.5
"""A single cell covering more than this fraction of an image is refused as a training label."""


# ---------------------------------------------------------------------------------------------- labels
def check_training_labels(
    labels: np.ndarray, shape: tuple[int, int] | None = None, *, name: str = "labels"
) -> np.ndarray:
    """Validate one training label image and number its cells ``1..n``.

    Raises a clear error for non-2D, non-integer or negative labels, labels not of ``shape`` and a
    single cell covering more than half of the image (a foreground mask, not cell instances). Ids
    that are not consecutive (gaps, huge ids) are renumbered in order. An image without cells is
    returned as is (the caller decides whether that is an error).
    """
    from skimage.segmentation import relabel_sequential

    from ..tl._metrics_core import as_labels

    labels = as_labels(labels, name=name, allow_mask=False, large_ids=True)
    if shape is not None and labels.shape != tuple(shape):
        raise ValueError(f"{name}: labels of shape {labels.shape} do not match the image's shape {tuple(shape)}.")
    if not labels.any():
        return labels.astype(np.int32)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    biggest = counts.max() / labels.size
    if biggest > GIANT_CELL_FRACTION:
        raise ValueError(
            f"{name}: cell {ids[counts.argmax()]} covers {biggest:.0%} of the image; this looks like a foreground "
            "mask rather than cell instances. Give every cell its own id (e.g. gsn.pp.watershed)."
        )
    if ids[-1] != len(ids):
        labels = relabel_sequential(labels)[0]
    return labels.astype(np.int32, copy=False)


def label_agreement(old: np.ndarray, new: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over the cells of ``old`` of their best IoU with a cell of ``new`` (the stopping criterion).

    Returns the mean and the per-cell best IoUs (0 for a cell no new cell overlaps). ``nan`` when
    ``old`` has no cells.
    """
    from ..tl._metrics_core import iou_matrix

    iou, old_ids, _ = iou_matrix(old, new)
    if len(old_ids) == 0:
        return float("nan"), np.zeros(0)
    best = np.zeros(len(old_ids)) if iou.shape[1] == 0 else iou.max(axis=1).toarray().ravel()
    return float(best.mean()), best


REFINE_MODES = ("grow", "levelset", "none")
"""Label updates between rounds: regrow with the transcripts, the paper's level set, or none."""

ANCHOR_EROSION_UM = 0.8
"""Decoded cells are eroded by this much before they are regrown (regrowing full cells drifts outward)."""


def resolve_refine(refine: str | bool) -> str:
    """Normalise ``refine``: ``True`` is the paper's level set, ``False`` none; else one of :data:`REFINE_MODES`."""
    if refine is True:
        return "levelset"
    if refine is False or refine is None:
        return "none"
    if refine not in REFINE_MODES:
        raise ValueError(f"`refine` must be one of {REFINE_MODES} (or True/False), got {refine!r}.")
    return refine


def update_labels(
    model: GeneSegNetModel,
    inputs: np.ndarray,
    *,
    refine: str | bool = "levelset",
    transcripts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    pixel_size: float | None = None,
    max_distance: float = 8.0,
    smooth: bool = False,
    nu: float = 1.0,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    n_iter: int = 60,
    decode: Mapping[str, Any] | None = None,
    tile: int = 256,
    device: str | torch.device = "auto",
    seed: int = 0,
) -> np.ndarray:
    """Eq. 3: predict on one training image, decode the cells and update them.

    ``refine="grow"``: the decoded cells, eroded by :data:`ANCHOR_EROSION_UM`, are regrown into whole
    cells with the transcripts (:func:`gsn.models.grow_labels`; needs ``transcripts``), then
    optionally smoothed by the level set (``smooth``). ``"levelset"``: the paper's Chan-Vese level
    set (Eqs. 13-14) on the decoded cells. ``"none"``: the decoded cells as they are.

    Returns int32 labels numbered ``1..n`` on the grid of ``inputs``.
    """
    from skimage.segmentation import relabel_sequential

    mode = resolve_refine(refine)
    if mode == "grow" and transcripts is None:
        raise ValueError('`refine="grow"` needs the transcripts of the training image.')
    maps = predict_maps(model.net, inputs, tile=tile, device=device, progress=False)
    labels = decode_instances(maps.mask, maps.center, maps.offsets, **dict(decode or {}))
    if labels.any() and mode == "grow":
        from ._growth import erode_labels, grow_labels

        px = 0.2 if pixel_size is None else float(pixel_size)
        anchors = erode_labels(labels, int(round(ANCHOR_EROSION_UM / px)))
        x, y, genes = transcripts
        labels, _ = grow_labels(anchors, x, y, genes, pixel_size=px, max_distance=max_distance, kind="nuclei",
                                seed=seed)  # fmt: skip
    if labels.any() and (mode == "levelset" or (mode == "grow" and smooth)):
        labels = refine_label_image(labels, nu=nu, lambda1=lambda1, lambda2=lambda2, n_iter=n_iter)
    if labels.any():
        labels = relabel_sequential(labels)[0]
    return labels.astype(np.int32, copy=False)


def _label_stats(labels: Sequence[np.ndarray]) -> tuple[int, float]:
    n = sum(int(np.count_nonzero(np.bincount(lab.ravel())[1:])) for lab in labels)
    area = sum(int(np.count_nonzero(lab)) for lab in labels)
    return n, (area / n if n else 0.0)


# ---------------------------------------------------------------------------------------------- checkpoints
def fingerprint(samples: Sequence[TrainingSample], params: Mapping[str, Any]) -> dict[str, Any]:
    """Describe what must not change before a run resumes: the settings and hashes of the data."""
    fp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    fp["n_samples"] = len(samples)
    for i, s in enumerate(samples):
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(s.inputs).tobytes())
        h.update(np.ascontiguousarray(s.labels, dtype=np.int64).tobytes())
        fp[f"sample_{i}"] = f"{s.inputs.shape} {h.hexdigest()[:16]}"
    return fp


def save_checkpoint(path, model: GeneSegNetModel, labels: Sequence[np.ndarray], fp: Mapping[str, Any], *, done: bool):
    """Write model, current labels, round history and fingerprint atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": asdict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "labels": [torch.from_numpy(np.ascontiguousarray(lab, dtype=np.int32)) for lab in labels],
        "fingerprint": dict(fp),
        "done": bool(done),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def check_checkpoint_path(path) -> None:
    """Refuse a checkpoint path that holds something other than a gsn checkpoint: it would be overwritten."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`checkpoint={str(path)!r}` is a folder; give a file path for the checkpoint.")
    if not path.exists():
        return
    why = "it holds something else"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is not ours
        payload, why = None, f"not a readable torch file: {type(e).__name__}"
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"`checkpoint={str(path)!r}` exists and is not a gsn training checkpoint ({why}); it would be "
            "overwritten. Choose another path (or delete the file yourself)."
        )


def load_checkpoint(path, fp: Mapping[str, Any]) -> tuple[GeneSegNetModel, list[np.ndarray], bool]:
    """Read a checkpoint; refuse it (``ValueError`` naming the fields) when the configuration differs."""
    where = f"Cannot resume from checkpoint {str(path)!r}"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{where}: not a readable torch file ({type(e).__name__}: {e}).") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{where}: not a gsn recursive-training checkpoint.")
    saved = payload.get("fingerprint", {})
    differ = sorted(k for k in set(saved) | set(fp) if saved.get(k, "<missing>") != fp.get(k, "<missing>"))
    if differ:
        details = "; ".join(f"{k}: checkpoint {saved.get(k, '<missing>')!r}, now {fp.get(k, '<missing>')!r}"
                            for k in differ)  # fmt: skip
        raise ValueError(
            f"{where}: the configuration differs from the checkpoint's in {', '.join(differ)} ({details}). "
            "Use the same settings, or start afresh with resume=False (or another checkpoint path)."
        )
    config = _config_from_dict(payload["config"], where)
    model = GeneSegNetModel(config, source=str(path))
    model.net.load_state_dict(payload["state_dict"], strict=True)
    model.net.eval()
    labels = [t.numpy().astype(np.int32) for t in payload["labels"]]
    return model, labels, bool(payload.get("done", False))


# ---------------------------------------------------------------------------------------------- the loop
def recursive_train(
    model: GeneSegNetModel,
    samples: Sequence[TrainingSample],
    *,
    max_rounds: int = 3,
    iou_stop: float = 0.93,
    refine: str | bool = "grow",
    max_distance: float = 8.0,
    smooth: bool = False,
    nu: float = 1.0,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    n_iter: int = 60,
    warm_start: bool = True,
    decode: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    fingerprint_params: Mapping[str, Any] | None = None,
    init_model: Callable[[], GeneSegNetModel] | None = None,
    on_round: Callable[[int, GeneSegNetModel, list[np.ndarray]], None] | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    **train_kwargs,
) -> tuple[GeneSegNetModel, list[np.ndarray]]:
    """Alternate training (Eq. 2) and label updates (Eq. 3) until the labels agree between rounds.

    Parameters
    ----------
    model
        The model of round 1 (fresh or pretrained).
    samples
        Training images with their initial labels ``Y(1)`` (numbered ``1..n``; see
        :func:`check_training_labels`).
    max_rounds
        Upper bound on the number of rounds (each = one :func:`train_network` call).
    iou_stop
        Stop once the mean over the cells of ``Y(t)`` of their best IoU against ``Y(t+1)`` exceeds this.
    refine
        How the decoded cells become the next labels (:func:`update_labels`): ``"grow"`` (default)
        regrows them with the transcripts from eroded anchors (every sample needs ``transcripts``),
        ``"levelset"`` (or ``True``) is the paper's Chan-Vese refinement (Eqs. 13-14), ``"none"``
        (or ``False``) keeps them as decoded.
    max_distance
        With ``"grow"``: how far (microns) a cell may reach beyond its anchor.
    smooth
        With ``"grow"``: also smooth the grown cells with the level set.
    nu, lambda1, lambda2, n_iter
        Level-set weights and iterations (:func:`refine_label_image`).
    warm_start
        ``True``: each round continues from the previous round's weights (a new optimiser and
        learning-rate schedule per round). ``False``: each round starts from freshly initialised
        weights (``init_model()``), as the reference implementation does.
    decode
        Keyword arguments of :func:`decode_instances` (thresholds, ``min_area``).
    checkpoint
        File written after every round: weights, configuration with the epoch and round history,
        the current labels of every sample, and a fingerprint of the settings and data.
    resume
        Continue from ``checkpoint`` if it exists; a ``ValueError`` names the settings that differ.
        ``max_rounds`` and ``iou_stop`` may change (e.g. to run more rounds).
    fingerprint_params
        Settings recorded in (and compared with) the checkpoint, besides the data hashes.
    init_model
        Factory of a fresh model (needed when ``warm_start=False``).
    on_round
        Called after each round's label update with ``(round, model, new_labels)`` (benchmarks).
    seed
        Round ``t`` trains with seed ``seed + t - 1``.
    device
        Torch device.
    train_kwargs
        Passed to :func:`train_network` (epochs, steps, batch, crop, lr, ...).

    Returns
    -------
    ``(model, labels)``: the model of the last round (its ``rounds`` hold one record per round, its
    epochs are tagged with ``round``) and the last labels ``Y(T+1)`` per sample.
    """
    if max_rounds < 1:
        raise ValueError(f"`max_rounds` must be >= 1, got {max_rounds}.")
    if not 0 < iou_stop <= 1:
        raise ValueError(f"`iou_stop` must be in (0, 1], got {iou_stop}.")
    if not warm_start and init_model is None:
        raise ValueError("`warm_start=False` needs `init_model`, a factory of fresh models.")
    refine = resolve_refine(refine)
    if refine == "grow":
        missing = [s.name for s in samples if s.transcripts is None]
        if missing:
            raise ValueError(
                f'`refine="grow"` regrows cells with the transcripts, but {", ".join(missing)} carry none: '
                'pass TrainingSample(..., transcripts=(x, y, genes)) or use refine="levelset".'
            )
    labels = [np.asarray(s.labels) for s in samples]
    if not any(lab.any() for lab in labels):
        raise ValueError("The training labels contain no cells.")
    fp = fingerprint(samples, {**dict(fingerprint_params or {}), "refine": refine, "max_distance": max_distance,
                               "smooth": smooth, "nu": nu, "lambda1": lambda1,
                               "lambda2": lambda2, "n_iter": n_iter, "warm_start": warm_start,
                               "decode": dict(decode or {}), "seed": seed})  # fmt: skip
    start = 1
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        model, labels, done = load_checkpoint(checkpoint, fp)
        start = len(model.rounds) + 1
        last = model.rounds[-1] if model.rounds else {}
        converged = bool(last.get("mean_iou", 0) > iou_stop) or (done and last.get("n_cells", 1) == 0)
        logger.info("Resuming recursive training from %s after round %d", checkpoint, start - 1)
        if converged or start > max_rounds:
            model.labels = labels
            return model, labels
    elif resume:
        logger.info("No checkpoint at %s; starting recursive training from round 1", checkpoint)

    for t in range(start, max_rounds + 1):
        t0 = time.perf_counter()
        # Kept so a round whose network predicts no cells can be undone (its labels are never used).
        previous = (model, {k: v.detach().clone() for k, v in model.net.state_dict().items()}) if t > 1 else None
        if t > 1 and not warm_start:
            fresh = init_model()
            fresh.config.history, fresh.config.rounds = model.config.history, model.config.rounds
            fresh.config.train_params = model.config.train_params
            model = fresh
        round_samples = [TrainingSample(s.inputs, lab, name=s.name, transcripts=s.transcripts, pixel_size=s.pixel_size)
                         for s, lab in zip(samples, labels, strict=True)]  # fmt: skip
        n_before = len(model.history)
        train_network(model, round_samples, seed=seed + t - 1, device=device, **train_kwargs)
        for rec in model.history[n_before:]:
            rec["round"] = t
        t_train = time.perf_counter() - t0
        new = [update_labels(model, s.inputs, refine=refine, transcripts=s.transcripts, pixel_size=s.pixel_size,
                             max_distance=max_distance, smooth=smooth, nu=nu, lambda1=lambda1, lambda2=lambda2,
                             n_iter=n_iter, decode=decode, device=device, seed=seed) for s in samples]  # fmt: skip
        # Pool the best IoUs of all samples' cells: the mean over cells of Y(t).
        best = np.concatenate([label_agreement(old, nw)[1] for old, nw in zip(labels, new, strict=True)])
        mean_iou = float(best.mean()) if best.size else float("nan")
        n_cells, mean_area = _label_stats(new)
        n_in, area_in = _label_stats(labels)
        converged = bool(mean_iou > iou_stop)
        record = {
            "round": t,
            "loss": float(model.history[-1]["loss"]),
            "mean_iou": mean_iou,
            "n_cells": n_cells,
            "mean_area": float(mean_area),
            "n_cells_in": n_in,
            "mean_area_in": float(area_in),
            "seconds": time.perf_counter() - t0,
            "seconds_train": t_train,
            "converged": converged,
        }
        model.config.rounds.append(record)
        logger.info(
            "round %d: loss %.4f, mean best IoU with the next labels %.3f, %d -> %d cells, mean area %.1f -> %.1f px",
            t, record["loss"], mean_iou, n_in, n_cells, area_in, mean_area,
        )  # fmt: skip
        if on_round is not None:
            on_round(t, model, new)
        if n_cells == 0:
            if previous is not None:
                # The model that made the current labels is the better one: return it, not a collapsed one.
                model, state = previous
                model.net.load_state_dict(state)
                model.config.rounds = [*model.config.rounds[:-1], {**record, "reverted": True}]
                logger.warning("Round %d predicted no cells on the training images; returning the model and "
                               "labels of round %d.", t, t - 1)  # fmt: skip
            else:
                logger.warning("Round %d predicted no cells on the training images; stopping.", t)
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, labels, fp, done=True)
            break
        labels = new
        stop = converged or t == max_rounds
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, labels, fp, done=stop)
        if converged:
            logger.info("Labels converged (mean IoU %.3f > %.3f) after round %d.", mean_iou, iou_stop, t)
            break
    model.labels = labels
    return model, labels

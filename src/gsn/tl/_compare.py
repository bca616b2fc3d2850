"""Every metric for several segmentations of the same data, in one tidy table (a Fig. 2-like panel)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import spatialdata as sd

from .._constants import INSTANCE_KEY, Key
from .._elements import get_single_channel
from .._logging import logger
from ._cells import transcript_index
from ._metrics import get_table, labels_source
from ._metrics_blocks import cell_calling_blocks, morphology_blocks, pixel_coverage_blocks, rna_coverage_blocks
from ._metrics_core import DEFAULT_DELTAS, DEFAULT_THRESHOLDS, n_genes_from_counts

COLUMNS = ["key", "metric", "stat", "level", "lower", "upper", "value"]
SUMMARY = {"mean": None, "q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}
PER_CELL_METRICS = ("area", "perimeter", "elongation", "convexity", "n_genes", "n_transcripts")
TRUTH_METRICS = ("precision", "recall", "f1", "average_precision", "mean_matched_iou")
TRUTH_SCALARS = ("mean_true_iou", "transcript_accuracy", "transcript_precision", "transcript_recall")


def _rows(key: str, metric: str, stat, value, level=np.nan, lower=np.nan, upper=np.nan) -> pd.DataFrame:
    value = np.atleast_1d(np.asarray(value, dtype=np.float64))
    n = len(value)

    def col(v):
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (n,))

    return pd.DataFrame(
        {
            "key": key,
            "metric": metric,
            "stat": np.broadcast_to(np.asarray(stat, dtype=object), (n,)),
            "level": col(level),
            "lower": col(lower),
            "upper": col(upper),
            "value": value,
        }
    )


def _summary(key: str, metric: str, values: np.ndarray) -> list[pd.DataFrame]:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    out = []
    for stat, q in SUMMARY.items():
        if not len(values):
            v = np.nan
        else:
            v = values.mean() if q is None else np.quantile(values, q)
        out.append(_rows(key, metric, stat, v))
    return out


def compare(
    sdata: sd.SpatialData,
    keys: Sequence[str],
    *,
    image_key: str | None = None,
    channel: str | int | None = None,
    points_key: str | None = None,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    bins: int | Sequence[float] = 10,
    truth_key: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    groupby: str | None = None,
    min_genes: int = 5,
    min_cell_fraction: float = 0.05,
    per_cell: bool = False,
    markers: dict | None = None,
) -> pd.DataFrame:
    """All segmentation metrics for several segmentations of the same data, as one tidy table.

    The object behind a Fig. 2-like panel of the GeneSegNet paper. For each segmentation prefix in
    ``keys``, rows for (``metric``: ``stat``):

    - ``n_cells``: ``value``;
    - ``cell_calling``: ``ratio``, ``n_in``, ``n_out`` per ``level`` = delta (:func:`cell_calling`);
    - ``pixels_in_cells`` and ``transcripts_in_cells``: ``fraction`` overall;
    - ``pixel_coverage`` and ``rna_coverage``: ``fraction`` per ``level`` = bin, with the bin's ``lower``
      and ``upper`` pixel values (:func:`pixel_coverage`, :func:`rna_coverage`; needs an image);
    - ``area``, ``perimeter``, ``elongation``, ``convexity`` (:func:`morphology`), ``n_genes``
      (:func:`genes_per_cell`) and ``n_transcripts`` per cell: ``mean``, ``q05``, ``q25``, ``median``,
      ``q75``, ``q95``; with ``per_cell=True`` also one ``cell`` row per cell (``level`` = cell id);
    - with ``truth_key``, from :func:`match_truth`: ``precision``, ``recall``, ``f1``,
      ``average_precision``, ``mean_matched_iou`` per ``level`` = IoU threshold, ``average_precision``:
      ``mean`` over thresholds, and ``mean_true_iou`` and ``transcript_accuracy`` / ``_precision`` /
      ``_recall``: ``value``;
    - with ``markers``, ``mecr``: ``value`` (:func:`mecr`, the same markers for every key);
    - with ``groupby``, ``correlation_reproducibility``: ``median`` over pairs of groups
      (:func:`correlation_reproducibility`).

    Bins of the coverage curves depend only on the image and the transcripts, so they are shared by
    all segmentations. Genes and transcripts per cell come from ``<key>_table`` when it exists, else
    from the transcripts under the labels.

    Parameters
    ----------
    sdata
        SpatialData object holding all segmentations, the image and the transcripts.
    keys
        Segmentation prefixes (or labels element names) to compare.
    image_key, channel
        Image (and channel) for the coverage curves; without any image those rows are left out.
    points_key
        Transcripts element; may be omitted when there is exactly one.
    deltas
        Cell-calling distances in pixels.
    bins
        Quantile bins (or explicit edges) of the coverage curves.
    truth_key
        Truth labels (element name or prefix) for accuracy rows; see :func:`match_truth`.
    thresholds
        IoU thresholds for the accuracy rows.
    groupby
        ``obs`` column of the tables naming replicate samples, for gene-gene correlation
        reproducibility between them.
    min_genes, min_cell_fraction
        Filters of the gene-gene correlation (see :func:`gene_correlation`).
    per_cell
        Add one row per cell for the per-cell metrics.
    markers
        ``{cell type: [genes]}`` for MECR rows (see :func:`marker_genes`).

    Returns
    -------
    Tidy DataFrame with columns ``key``, ``metric``, ``stat``, ``level``, ``lower``, ``upper``, ``value``.
    """
    if isinstance(keys, str):
        keys = [keys]
    if not keys:
        raise ValueError("Pass at least one segmentation key.")
    from ..blockwise import BLOCK_SIZE, LABELS_HALO, ArraySource

    has_tx = points_key is not None or len(sdata.points)
    image = None
    if image_key is not None or len(sdata.images):
        _, image_el = get_single_channel(sdata, image_key, channel=channel)
        image = ArraySource(image_el)
    frames: list[pd.DataFrame] = []
    indexes: dict = {}  # segmentations on one pixel grid share their transcript index
    for key in keys:
        # Every metric block by block (gsn.tl._metrics_blocks): no whole label image is loaded.
        name, element, source = labels_source(sdata, key)
        index = transcript_index(sdata, points_key, element, name, cache=indexes) if has_tx else None
        morph = morphology_blocks(source, block_size=BLOCK_SIZE, halo=LABELS_HALO)
        frames.append(_rows(key, "n_cells", "value", len(morph)))
        n_pixels = source.shape[0] * source.shape[1]
        frames.append(_rows(key, "pixels_in_cells", "fraction", morph["area"].sum() / n_pixels if n_pixels else np.nan))
        if index is not None:
            calling = cell_calling_blocks(source, index, deltas=deltas, block_size=BLOCK_SIZE)
            for stat, col in (("ratio", "cell_calling"), ("n_in", "n_in"), ("n_out", "n_out")):
                frames.append(_rows(key, "cell_calling", stat, calling[col].to_numpy(), level=calling["delta"]))
            n_in = int(calling["n_in"].iloc[0])
            frames.append(
                _rows(key, "transcripts_in_cells", "fraction", n_in / index.n_inside if index.n_inside else np.nan)
            )
        if image is not None:
            if image.shape != tuple(source.shape):
                logger.warning("Image and labels of %r differ in shape; coverage curves left out.", key)
            else:
                curves = [("pixel_coverage", pixel_coverage_blocks(source, image, bins=bins, block_size=BLOCK_SIZE))]
                if index is not None:
                    cov = rna_coverage_blocks(source, image, index, bins=bins, block_size=BLOCK_SIZE)
                    curves.append(("rna_coverage", cov))
                for metric, cov in curves:
                    frames.append(
                        _rows(key, metric, "fraction", cov["fraction"], cov["bin"], cov["lower"], cov["upper"])
                    )
        # genes and transcripts per cell
        per_cell_values = {m: morph[m].to_numpy() for m in ("area", "perimeter", "elongation", "convexity")}
        cell_ids = {m: morph.index.to_numpy() for m in per_cell_values}
        try:
            table = get_table(sdata, Key.prefix(name))
        except KeyError:
            table = None
        if table is not None and table.n_obs:
            ids = table.obs[INSTANCE_KEY].to_numpy() if INSTANCE_KEY in table.obs else table.obs_names.astype(np.int64)
            per_cell_values["n_genes"] = n_genes_from_counts(table.X)
            per_cell_values["n_transcripts"] = np.asarray(table.X.sum(axis=1)).ravel()
            cell_ids["n_genes"] = cell_ids["n_transcripts"] = np.asarray(ids, dtype=np.int64)
        elif index is not None:
            from ._cells_pass import cells_pass

            cells = cells_pass(source, index=index, n_genes=len(index.genes), block_size=BLOCK_SIZE, halo=0,
                               polygons=False, progress=False)  # fmt: skip
            counts = cells.counts[cells.stats.index.get_indexer(morph.index)]
            per_cell_values["n_genes"] = n_genes_from_counts(counts)
            per_cell_values["n_transcripts"] = np.asarray(counts.sum(axis=1)).ravel()
            cell_ids["n_genes"] = cell_ids["n_transcripts"] = morph.index.to_numpy()
        for metric in PER_CELL_METRICS:
            if metric not in per_cell_values:
                continue
            frames.extend(_summary(key, metric, per_cell_values[metric]))
            if per_cell:
                frames.append(_rows(key, metric, "cell", per_cell_values[metric], level=cell_ids[metric]))
        if truth_key is not None:
            from ._metrics_truth import match_truth

            acc = match_truth(sdata, key, truth_key, thresholds=thresholds, points_key=points_key)
            for metric in TRUTH_METRICS:
                frames.append(_rows(key, metric, "value", acc[metric].to_numpy(), level=acc.index.to_numpy()))
            frames.append(_rows(key, "average_precision", "mean", acc["average_precision"].mean()))
            for metric in TRUTH_SCALARS:
                frames.append(_rows(key, metric, "value", acc[metric].iloc[0]))
        if markers is not None:
            from ._purity import mecr

            frames.append(_rows(key, "mecr", "value", mecr(sdata, key, markers, points_key=points_key)))
        if groupby is not None and (table is None or groupby not in table.obs):
            logger.warning("No table with an obs column %r for %r; reproducibility left out.", groupby, key)
        elif groupby is not None:
            from ._correlation import correlation_reproducibility

            r = correlation_reproducibility(
                table, groupby=groupby, min_genes=min_genes, min_cell_fraction=min_cell_fraction
            )
            frames.append(_rows(key, "correlation_reproducibility", "median", r))
    out = pd.concat(frames, ignore_index=True)
    out["key"] = pd.Categorical(out["key"], categories=list(dict.fromkeys(keys)))
    return out[COLUMNS]

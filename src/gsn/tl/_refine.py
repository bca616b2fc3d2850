"""``gsn.tl.refine_labels``: level-set refinement of any label image or labels element."""

from __future__ import annotations

import numpy as np
import spatialdata as sd
from spatialdata.models import Labels2DModel
from spatialdata.transformations import get_transformation

from .._elements import check_free, label_source
from .._logging import logger
from ..io._write import add_elements


def refine_labels(
    data: np.ndarray | sd.SpatialData,
    labels_key: str | None = None,
    *,
    nu: float = 1.0,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    n_iter: int = 60,
    margin: int = 4,
    key_added: str | None = None,
    overwrite: bool = False,
    block_size: int | None = None,
    halo: int | None = None,
    client=None,
):
    """Refine cell outlines with the Chan-Vese level set of the GeneSegNet paper (Eqs. 13-14).

    Every cell evolves on its own mask in a window around it (see
    :func:`gsn.models.refine_label_image`); cells never take each other's pixels. With the paper's
    weights (``nu = lambda1 = lambda2 = 1``) the change is small (jitter smoothed, thin spurs
    trimmed); a larger ``nu`` fills notches and rounds cells more (docs/levelset.md has numbers).
    A labels element is refined block by block (bounded memory, optionally on a dask cluster), with
    the same result as the whole image at once.

    Parameters
    ----------
    data
        A 2D label array, or a SpatialData object holding ``labels_key``.
    labels_key
        Labels element to refine when ``data`` is a SpatialData.
    nu, lambda1, lambda2
        Length weight and inside/outside fitting weights of Eq. 13.
    n_iter
        Level-set time steps.
    margin
        How far (pixels) a cell may grow beyond its bounding box.
    key_added
        Name of the labels element written (SpatialData input); default ``"<labels_key>_refined"``.
    overwrite
        Replace an existing element of that name.
    block_size, halo
        SpatialData input: square blocks of ``block_size`` px (default 1024), each read with ``halo``
        px of context (default 256), which must exceed two cell diameters plus ``2 * margin`` (a
        WARNING says when a cell reached the edge of its block's context).
    client
        A ``dask.distributed.Client`` to run the blocks on.

    Returns
    -------
    The refined label array for array input; None for SpatialData input (element added).
    """
    from .._settings import settings
    from ..blockwise import Scratch, block_grid, block_options, map_blocks, warm_up
    from ..models._levelset import refine_label_image, refine_window
    from ._cells import labels_from_raster, settle_labels

    params = {"nu": nu, "lambda1": lambda1, "lambda2": lambda2, "n_iter": n_iter, "margin": margin}
    if not isinstance(data, sd.SpatialData):
        return refine_label_image(np.asarray(data), **params)
    if labels_key is None:
        raise ValueError("Pass `labels_key` to say which labels element to refine.")
    block_size, halo = block_options(block_size, halo)
    labels_key, element, source = label_source(data, labels_key)
    name = key_added or f"{labels_key}_refined"
    check_free(data, [name], overwrite=overwrite, inputs=(labels_key,))
    warm_up(client)
    shape = tuple(source.shape)
    blocks = block_grid(shape, block_size)

    def inputs(block):
        window = block.grow(halo, shape)
        return source.read(window), window, block, shape, params

    with Scratch.shared_with(client, data.path) as scratch:
        out = scratch.raster("labels", shape, np.int32, chunk=block_size, keep=True)
        cut = map_blocks(refine_window, blocks, inputs, write=out, client=client, workers_read=scratch.shared,
                         progress=settings.progress, desc="level set")  # fmt: skip
    if sum(cut):
        logger.warning(
            "%d cell(s) reach the edge of the %d px halo of their block: their refinement may differ from "
            "the whole image's. Pass a larger `halo`.", sum(cut), halo,
        )  # fmt: skip
    new = Labels2DModel.parse(
        labels_from_raster(out), dims=("y", "x"), transformations=get_transformation(element, get_all=True)
    )
    add_elements(data, {name: new}, overwrite=overwrite)
    settle_labels(data, name, out)
    return None

"""``gsn.tl.refine_labels``: level-set refinement of any label image or labels element."""

from __future__ import annotations

import numpy as np
import spatialdata as sd
from spatialdata.models import Labels2DModel
from spatialdata.transformations import get_transformation

from .._elements import check_free, label_values
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
):
    """Refine cell outlines with the Chan-Vese level set of the GeneSegNet paper (Eqs. 13-14).

    Every cell evolves on its own mask in a window around it (see
    :func:`gsn.models.refine_label_image`); cells never take each other's pixels. With the paper's
    weights (``nu = lambda1 = lambda2 = 1``) the change is small (jitter smoothed, thin spurs
    trimmed); a larger ``nu`` fills notches and rounds cells more (docs/levelset.md has numbers).

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

    Returns
    -------
    The refined label array for array input; None for SpatialData input (element added).
    """
    from ..models._levelset import refine_label_image

    params = {"nu": nu, "lambda1": lambda1, "lambda2": lambda2, "n_iter": n_iter, "margin": margin}
    if not isinstance(data, sd.SpatialData):
        return refine_label_image(np.asarray(data), **params)
    if labels_key is None:
        raise ValueError("Pass `labels_key` to say which labels element to refine.")
    labels_key, element, values = label_values(data, labels_key)
    name = key_added or f"{labels_key}_refined"
    check_free(data, [name], overwrite=overwrite, inputs=(labels_key,))
    refined = refine_label_image(values, **params)
    new = Labels2DModel.parse(refined, dims=("y", "x"), transformations=get_transformation(element, get_all=True))
    add_elements(data, {name: new}, overwrite=overwrite)
    return None

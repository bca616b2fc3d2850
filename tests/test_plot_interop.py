"""spatialdata-plot colours gsn's labels by columns of gsn's table (the recipes of docs/plotting.md)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from tests.conftest import tiny_arrays

import gsn

pytest.importorskip("spatialdata_plot")


def _cell_colours(ax, labels):
    """RGBA drawn for each cell (one colour per cell) and for the background, from the rendered labels."""
    (image,) = ax.images
    rgba = np.asarray(image.get_array(), dtype=np.float64)
    assert rgba.shape[:2] == labels.shape  # drawn on the labels' pixel grid
    colours = {}
    for cell in np.unique(labels[labels > 0]):
        drawn = rgba[labels == cell]
        assert np.ptp(drawn, axis=0).max() < 1e-6, f"cell {cell} is not filled with one colour"
        colours[int(cell)] = drawn[0]
    return colours, rgba[labels == 0]


def test_render_labels_coloured_by_table_column_and_cluster(sdata):
    """Headless (Agg, set in conftest) render: each cell gets the colour of its table value."""
    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)

    _, labels, _, _ = tiny_arrays()
    gsn.tl.cells_from_labels(sdata, "truth_labels")
    table = sdata["truth_table"]
    assert table.uns["spatialdata_attrs"]["region"] == "truth_labels"

    # a continuous column: the default colormap over the column's range
    fig, ax = plt.subplots()
    sdata.pl.render_labels("truth_labels", color="n_transcripts", table_name="truth_table", fill_alpha=1.0).pl.show(
        ax=ax, coordinate_systems="global"
    )
    colours, background = _cell_colours(ax, labels)
    values = table.obs.set_index("cell_id")["n_transcripts"]
    assert values.nunique() == 3
    cmap = plt.get_cmap(matplotlib.rcParams["image.cmap"])
    for cell, colour in colours.items():
        expected = cmap((values[cell] - values.min()) / (values.max() - values.min()))
        np.testing.assert_allclose(colour[:3], expected[:3], atol=0.02)
    assert np.all(background[:, 3] == 0)  # background left transparent
    fig.canvas.draw()
    assert np.unique(np.asarray(fig.canvas.buffer_rgba()).reshape(-1, 4), axis=0).shape[0] > 3  # not blank
    plt.close(fig)

    # a categorical column (a two-group "cluster" by transcript count): one colour per category
    n = table.obs["n_transcripts"]
    table.obs["cluster"] = pd.Categorical(np.where(n >= n.median(), "high", "low"))
    fig, ax = plt.subplots()
    sdata.pl.render_labels("truth_labels", color="cluster", table_name="truth_table", fill_alpha=1.0).pl.show(
        ax=ax, coordinate_systems="global"
    )
    colours, _ = _cell_colours(ax, labels)
    cluster = table.obs.set_index("cell_id")["cluster"]
    assert cluster.nunique() == 2
    for a in colours:
        for b in colours:
            same = cluster[a] == cluster[b]
            assert np.allclose(colours[a], colours[b]) == same, (a, b, cluster[a], cluster[b])
    plt.close(fig)

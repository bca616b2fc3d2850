import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import BarContainer
from matplotlib.patches import StepPatch
from tests.conftest import data_folder
from tests.plotting import check_figure

import gsn

KEYS = ["prior", "watershed"]
CORR = {"min_genes": 30, "exclude": "^(NegPrb|NegControl|Blank)"}


def _stat(table, key, metric, stat):
    sel = table[(table["key"].astype(str) == key) & (table["metric"] == metric) & (table["stat"] == stat)]
    return sel.sort_values("level")["value"].to_numpy()


@pytest.fixture(scope="module")
def xenium():
    sdata = gsn.io.read_folder(data_folder("xenium_breast_bidcell"))
    gsn.pp.watershed(sdata)
    for key in KEYS:
        gsn.tl.cells_from_labels(sdata, f"{key}_labels")
    return sdata, gsn.tl.compare(sdata, KEYS, per_cell=True)


@pytest.fixture(scope="module")
def cosmx():
    fovs = {}
    for fov in ("fov002", "fov003"):
        sdata = gsn.io.read_folder(data_folder(f"cosmx_lung12_{fov}"))
        gsn.pp.watershed(sdata)
        for key in KEYS:
            gsn.tl.cells_from_labels(sdata, f"{key}_labels")
        fovs[f"FOV {fov[-1]}"] = sdata
    return fovs


@pytest.fixture
def segmented(sdata):
    gsn.pp.watershed(sdata, min_distance=3)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    gsn.tl.cells_from_labels(sdata, "truth_labels")
    return sdata


def test_cell_calling_bar_heights_equal_metric(segmented, tmp_path):
    fig = gsn.pl.cell_calling(segmented, keys=["truth", "watershed"], return_fig=True)
    ax = fig.axes[0]
    table = gsn.tl.compare(segmented, ["truth", "watershed"])
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["truth", "watershed"]
    for key, container in zip(["truth", "watershed"], bars, strict=True):
        heights = [p.get_height() for p in container.patches]
        np.testing.assert_allclose(heights, _stat(table, key, "cell_calling", "ratio"))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "5", "7"]
    # the same colours as every other panel
    assert bars[0].patches[0].get_facecolor()[:3] == pytest.approx(plt.matplotlib.colors.to_rgb("#000000"))
    check_figure(fig, "cell_calling_tiny", tmp_path)


def test_coverage_curves_equal_metric(xenium, tmp_path):
    _, table = xenium
    ax = gsn.pl.pixel_coverage(table, show=False)
    for line, key in zip(ax.get_lines(), KEYS, strict=True):
        np.testing.assert_allclose(line.get_ydata(), _stat(table, key, "pixel_coverage", "fraction"))
    overall = _stat(table, "prior", "pixels_in_cells", "fraction")[0]
    assert ax.get_legend().get_texts()[0].get_text() == f"prior ({overall:.0%} overall)"
    plt.close("all")

    fig = gsn.pl.rna_coverage(table, keys=KEYS[::-1], return_fig=True)
    ax = fig.axes[0]
    lines = ax.get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), _stat(table, "watershed", "rna_coverage", "fraction"))
    rows = table[(table["metric"] == "rna_coverage") & (table["key"] == "prior")].sort_values("level")
    edges = [*rows["lower"], rows["upper"].iloc[-1]]
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(int(e)) for e in edges]
    check_figure(fig, "rna_coverage_xenium", tmp_path)


def test_genes_per_cell_histogram_counts_cells(xenium, tmp_path):
    sdata, table = xenium
    fig = gsn.pl.genes_per_cell(table, return_fig=True)
    steps = [p for p in fig.axes[0].patches if isinstance(p, StepPatch)]
    assert len(steps) == 2
    for key, step in zip(KEYS, steps, strict=True):
        counts, edges, _ = step.get_data()
        n_genes = sdata[f"{key}_table"].obs["n_genes"].to_numpy()
        assert counts.sum() == len(n_genes)
        np.testing.assert_array_equal(counts, np.histogram(n_genes, edges)[0])
    assert np.all(np.diff(edges) == edges[1] - edges[0]) and edges[0] == -0.5
    check_figure(fig, "genes_per_cell_xenium", tmp_path)
    with pytest.raises(ValueError, match="per_cell=True"):
        gsn.pl.genes_per_cell(table[table["stat"] != "cell"])


def test_morphology_boxes_are_the_summary_stats(xenium, tmp_path):
    _, table = xenium
    metrics = ["area", "elongation", "convexity"]
    fig = gsn.pl.morphology(table, return_fig=True)
    assert [a.get_title() for a in fig.axes] == ["Cell area", "Elongation", "Convexity"]
    for metric, ax in zip(metrics, fig.axes, strict=True):
        assert len([c for c in ax.collections if isinstance(c, PolyCollection)]) == 2  # one violin per key
        lines = ax.get_lines()  # bxp: per box 2 whiskers, 2 caps, 1 median
        medians = [line.get_ydata()[0] for line in lines[4::5]]
        whiskers = [line.get_ydata()[1] for line in lines[0::5]] + [line.get_ydata()[1] for line in lines[1::5]]
        for i, key in enumerate(KEYS):
            assert medians[i] == pytest.approx(_stat(table, key, metric, "median")[0])
            assert whiskers[i] == pytest.approx(_stat(table, key, metric, "q05")[0])
            assert whiskers[2 + i] == pytest.approx(_stat(table, key, metric, "q95")[0])
        assert [t.get_text() for t in ax.get_xticklabels()] == KEYS
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "linear"
    check_figure(fig, "morphology_xenium", tmp_path)

    # summary rows only: boxes without violins; one metric gives one Axes
    ax = gsn.pl.morphology(table[table["stat"] != "cell"], "convexity", show=False)
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert ax.get_lines()[4].get_ydata()[0] == pytest.approx(_stat(table, "prior", "convexity", "median")[0])
    with pytest.raises(ValueError, match="Unknown morphology metric"):
        gsn.pl.morphology(table, "roundness")
    plt.close("all")


def test_compare_lays_out_every_panel(xenium, tmp_path):
    _, table = xenium
    fig = gsn.pl.compare(table, return_fig=True)
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["Cells", "Cell calling", "Pixels in cells by pixel value", "Transcripts in cells by pixel value",
                      "Genes detected per cell", "Cell area", "Elongation", "Convexity"]  # fmt: skip
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(heights, [_stat(table, k, "n_cells", "value")[0] for k in KEYS])
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == KEYS
    # one colour per key in every panel
    colors = gsn.pl.key_colors(KEYS)
    bar_colors = [plt.matplotlib.colors.to_hex(c.patches[0].get_facecolor()) for c in fig.axes[1].containers]
    line_colors = [plt.matplotlib.colors.to_hex(line.get_color()) for line in fig.axes[2].get_lines()]
    assert bar_colors == line_colors == [colors[k] for k in KEYS]
    check_figure(fig, "compare_xenium", tmp_path)

    fig, axes = plt.subplots(1, 2)
    out = gsn.pl.compare(table, keys="watershed", panels=["cell_calling", "area"], ax=axes)
    assert list(out) == list(axes) and axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="Unknown panel"):
        gsn.pl.compare(table, panels=["cell_calling", "nope"])
    plt.close("all")


def test_panels_from_spatialdata_match_the_table(segmented):
    keys = ["truth", "watershed"]
    table = gsn.tl.compare(segmented, keys, per_cell=True)
    a = gsn.pl.compare(segmented, keys, show=False)
    b = gsn.pl.compare(table, show=False)
    assert [x.get_title() for x in a] == [x.get_title() for x in b]
    for pa, pb in zip(a, b, strict=True):
        for la, lb in zip(pa.get_lines(), pb.get_lines(), strict=True):
            np.testing.assert_allclose(la.get_ydata(), lb.get_ydata())
    with pytest.raises(TypeError, match="only apply when"):
        gsn.pl.cell_calling(table, deltas=(1, 2))
    ax = gsn.pl.cell_calling(segmented, keys="truth", deltas=(1, 2), show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    plt.close("all")


def test_correlation_reproducibility_scatter(cosmx, tmp_path):
    fig = gsn.pl.correlation_reproducibility(cosmx, KEYS, max_points=5000, return_fig=True, **CORR)
    for key, ax in zip(KEYS, fig.axes, strict=True):
        pairs = gsn.tl.correlation_reproducibility(list(cosmx.values()), key, return_pairs=True, **CORR)
        assert ax.get_title() == f"{key}: r = {pairs['r'].iloc[0]:.3f}"
        n_drawn = len(ax.collections[0].get_offsets())
        assert n_drawn == min(5000, pairs["n_pairs"].iloc[0])
        assert f"{pairs['n_pairs'].iloc[0]:,} gene pairs" in ax.texts[0].get_text()
        assert ax.get_xlabel() == "gene-gene correlation, FOV 2" and ax.get_ylabel() == "gene-gene correlation, FOV 3"
    check_figure(fig, "correlation_cosmx", tmp_path)

    # precomputed correlation matrices give the same r
    corrs = [gsn.tl.gene_correlation(s, "prior", **CORR) for s in cosmx.values()]
    ax = gsn.pl.correlation_reproducibility(corrs, show=False)
    assert ax.get_title() == fig.axes[0].get_title().replace("prior: ", "")
    plt.close("all")


def test_correlation_reproducibility_bars(cosmx):
    ax = gsn.pl.correlation_reproducibility(cosmx, KEYS, kind="bar", show=False, **CORR)
    expected = [gsn.tl.correlation_reproducibility(list(cosmx.values()), k, **CORR) for k in KEYS]
    np.testing.assert_allclose([p.get_height() for p in ax.patches], expected)
    # from the table of gsn.tl.compare
    rows = pd.DataFrame({"key": KEYS, "metric": "correlation_reproducibility", "stat": "median", "level": np.nan,
                         "lower": np.nan, "upper": np.nan, "value": [0.5, 0.25]})  # fmt: skip
    ax = gsn.pl.correlation_reproducibility(rows, show=False)
    assert [p.get_height() for p in ax.patches] == [0.5, 0.25]
    # and in the compare figure, from replicate samples
    fovs = list(cosmx.values())
    axes = gsn.pl.compare(fovs[0], KEYS, replicates=fovs[1:], correlation_kwargs=CORR, show=False)
    assert axes[-1].get_title() == "Gene-gene correlation reproducibility"
    np.testing.assert_allclose([p.get_height() for p in axes[-1].patches], expected)
    with pytest.raises(ValueError, match="at least two samples"):
        gsn.pl.correlation_reproducibility(fovs[:1], "prior")
    with pytest.raises(ValueError, match="scatter needs the samples"):
        gsn.pl.correlation_reproducibility(rows, kind="scatter")
    plt.close("all")


def test_key_colors():
    assert gsn.pl.key_colors(["prior", "watershed", "genesegnet"]) == {
        "prior": "#e69f00", "watershed": "#0072b2", "genesegnet": "#d55e00"}  # fmt: skip
    mine = gsn.pl.key_colors(["a", "watershed", "b"])
    assert mine["watershed"] == "#0072b2" and len(set(mine.values())) == 3
    assert gsn.pl.key_colors(["a", "b"], {"a": "red"}) == {"a": "#ff0000", "b": "#0072b2"}
    assert gsn.pl.key_colors(["a", "b", "c"], ["red", "blue"])["c"] == "#ff0000"
    assert gsn.pl.key_colors(["a", "b"], "tab10") == {"a": "#1f77b4", "b": "#ff7f0e"}


def test_plot_conventions_and_errors(xenium):
    _, table = xenium
    fig, ax = plt.subplots()
    assert gsn.pl.cell_calling(table, ax=ax) is ax  # user Axes: not shown, returned
    assert gsn.pl.pixel_coverage(table, show=True) is None
    with pytest.raises(ValueError, match="needs 1 axes"):
        gsn.pl.genes_per_cell(table, ax=[ax, ax])
    with pytest.raises(KeyError, match="No rows for key"):
        gsn.pl.cell_calling(table, keys=["genesegnet"])
    with pytest.raises(ValueError, match="Not a table of `gsn.tl.compare`"):
        gsn.pl.cell_calling(pd.DataFrame({"x": [1]}))
    with pytest.raises(TypeError, match="Expected the DataFrame"):
        gsn.pl.cell_calling([1, 2])
    with pytest.raises(ValueError, match="needs transcripts"):
        gsn.pl.cell_calling(table[table["metric"] != "cell_calling"])
    plt.close("all")


def test_morphology_columns_work_with_scanpy_and_squidpy(cosmx):
    """The table gsn writes carries morphology in ``obs`` and centroids in ``obsm["spatial"]``."""
    import scanpy as sc
    import squidpy as sq

    sdata = cosmx["FOV 2"]
    gsn.tl.morphology(sdata, "prior")
    adata = sdata["prior_table"]
    ax = sc.pl.embedding(adata, basis="spatial", color="convexity", show=False)
    drawn = ax.collections[0].get_array()
    np.testing.assert_allclose(np.sort(drawn), np.sort(adata.obs["convexity"].to_numpy()))
    sq.pl.spatial_scatter(adata, color="elongation", shape=None, size=20)
    ax = plt.gcf().axes[0]
    np.testing.assert_allclose(np.sort(ax.collections[0].get_array()), np.sort(adata.obs["elongation"].to_numpy()))
    plt.close("all")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tests.plotting import check_figure  # noqa: E402

import gsn  # noqa: E402


@pytest.fixture(scope="module")
def tissue():
    sdata = gsn.datasets.synthetic(shape=(160, 160), seed=3, transcripts_per_cell=120.0)
    gsn.tl.cells_from_labels(sdata, "truth_labels", key_added="truth")
    gsn.tl.grow_cells(sdata, "prior_labels", key_added="grown")
    return sdata


def test_purity_table_against_the_curve(tissue):
    markers = gsn.tl.marker_genes(tissue, "prior_labels")
    curve = gsn.tl.expansion_curve(tissue, "prior_labels", markers, distances=(0, 2, 4, 8))
    table = gsn.tl.purity(tissue, ["truth", "prior_labels"], markers, reference=curve)
    assert list(table["key"]) == ["truth", "prior_labels"]
    # the prior itself lies on the curve (distance 0): same fraction, same MECR
    prior = table.iloc[1]
    assert prior["transcripts_in_cells"] == pytest.approx(curve["transcripts_in_cells"].iloc[0])
    assert prior["mecr"] == pytest.approx(curve["mecr"].iloc[0]) and not prior["below_reference"]
    # the true cells hold more transcripts than the nuclei at a MECR below expansion's
    truth = table.iloc[0]
    assert truth["transcripts_in_cells"] > prior["transcripts_in_cells"] + 0.2
    assert truth["below_reference"] and truth["mecr"] < truth["reference_mecr"]


def test_purity_plot(tissue, tmp_path):
    ax = gsn.pl.purity(tissue, ["truth", "grown"], distances=(0, 1, 2, 4, 6, 8), show=False)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["prior_labels expanded", "truth", "grown"]
    line = ax.get_lines()[0]
    assert len(line.get_xdata()) == 6 and np.all(np.diff(line.get_xdata()) >= 0)  # expansion only adds
    assert len(ax.collections) == 2  # one point per segmentation
    check_figure(ax.figure, "purity_synthetic", tmp_path)


def test_purity_plot_errors(tissue):
    with pytest.raises(ValueError, match="`keys` is empty"):
        gsn.pl.purity(tissue, [], show=False)
    with pytest.raises(KeyError):
        gsn.pl.purity(tissue, ["nope"], show=False)
    plt.close("all")

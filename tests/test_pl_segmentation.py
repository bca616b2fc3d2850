import matplotlib.pyplot as plt
import numpy as np
import pytest
from tests.plotting import check_figure

import gsn


@pytest.fixture
def segmented(sdata):
    gsn.pp.watershed(sdata, min_distance=3)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    gsn.tl.cells_from_labels(sdata, "truth_labels")
    return sdata


def test_segmentation_panels_match_reference(segmented, tmp_path):
    fig = gsn.pl.segmentation(segmented, ["truth", "watershed"], return_fig=True)
    axes = fig.axes
    assert [a.get_title() for a in axes[:2]] == ["truth (3 cells)", "watershed (3 cells)"]
    # inside/outside colouring equals the assignment written by cells_from_labels
    inside = axes[0].collections[1].get_offsets()
    ids = segmented["transcripts"]["truth_cell_id"].compute().to_numpy()
    assert len(inside) == int((ids > 0).sum())
    check_figure(fig, "segmentation_tiny", tmp_path)


def test_segmentation_zoom_on_cell_and_scale_bar(segmented):
    ax = gsn.pl.segmentation(segmented, "truth", cell_id=3, margin=2, show=False)
    assert ax.get_xlim() == (48, 77) and ax.get_ylim() == (62, 33)
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    bars = [a for a in ax.artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1  # 0.5 um pixels -> a bar in microns
    plt.close("all")


def test_segmentation_user_axes_and_errors(segmented):
    fig, ax = plt.subplots()
    out = gsn.pl.segmentation(segmented, "truth", ax=ax, transcripts=False)
    assert out is ax and len(ax.collections) == 0
    with pytest.raises(ValueError, match="needs 2 axes"):
        gsn.pl.segmentation(segmented, ["truth", "watershed"], ax=ax)
    with pytest.raises(KeyError, match="No labels element for \\['nope'\\]"):
        gsn.pl.segmentation(segmented, "nope")
    with pytest.raises(ValueError, match="does not overlap"):
        gsn.pl.segmentation(segmented, "truth", region=(500, 500, 600, 600))
    plt.close("all")


def test_segmentation_on_real_data(tmp_path):
    from tests.conftest import data_folder

    sdata = gsn.io.read_folder(data_folder("cosmx_lung12_fov002"))
    gsn.tl.cells_from_labels(sdata, "prior_labels")
    fig = gsn.pl.segmentation(sdata, "prior", return_fig=True)
    assert fig.axes[0].get_title() == f"prior ({sdata['prior_table'].n_obs} cells)"
    check_figure(fig, "segmentation_cosmx", tmp_path)
    assert np.isfinite(fig.axes[0].get_images()[0].get_array()).all()

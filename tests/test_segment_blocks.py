"""Block-wise segmentation: same cells as one piece, bounded by blocks, identical on a dask cluster."""

import numpy as np
import pytest
from tests.conftest import data_folder
from tests.oracle import disks_sdata, oracle_model
from tests.stores import XENIUM_PIXEL_SIZE

import gsn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def same_cells(a, b):
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_oracle_whole_image_finds_every_disk():
    sdata, truth = disks_sdata()
    gsn.tl.segment(sdata, oracle_model(), grow=False, key_added="whole", min_area=5, center_threshold=0.2)
    assert same_cells(sdata["whole_labels"].values, truth)


def test_blocks_give_the_same_cells_as_one_piece():
    sdata, truth = disks_sdata()
    model = oracle_model()
    gsn.tl.segment(sdata, model, grow=False, key_added="whole", min_area=5, center_threshold=0.2)
    gsn.tl.segment(
        sdata, model, grow=False, key_added="blocks", min_area=5, center_threshold=0.2, block_size=100, halo=40
    )
    whole, blocks = sdata["whole_labels"].values, sdata["blocks_labels"].values
    assert same_cells(whole, blocks) and blocks.max() == truth.max()
    table = sdata["blocks_table"]
    assert table.uns["genesegnet"]["block_size"] == 100 and table.n_obs == truth.max()


@pytest.fixture(scope="module")
def xenium_crop():
    sdata = gsn.io.read_folder(data_folder("xenium_breast_bidcell"))
    side = (700 * XENIUM_PIXEL_SIZE, 900 * XENIUM_PIXEL_SIZE)
    return sdata.query.bounding_box(
        axes=("x", "y"), min_coordinate=[300, 100], max_coordinate=[300 + side[1], 100 + side[0]],
        target_coordinate_system="global",
    )  # fmt: skip


@pytest.mark.slow
def test_block_size_does_not_change_the_cells(xenium_crop):
    """The default model on a real crop (resampled to its pixel size, bf16 where the CPU has it) and the
    growth with the transcripts: the same labels, ids included, from one piece and from blocks of three sizes."""
    sdata = xenium_crop
    labels = {}
    for block_size in (4096, 200, 300, 450):
        key = f"b{block_size}"
        gsn.tl.segment(sdata, key_added=key, block_size=block_size, halo=128)
        labels[block_size] = np.asarray(sdata[f"{key}_labels"].values)
    assert labels[4096].max() > 50
    for block_size in (200, 300, 450):
        np.testing.assert_array_equal(labels[block_size], labels[4096])
        assert sdata[f"b{block_size}_table"].uns["genesegnet"]["block_size"] == block_size
        for column in ("area", "n_transcripts"):
            np.testing.assert_array_equal(sdata[f"b{block_size}_table"].obs[column], sdata["b4096_table"].obs[column])


@pytest.mark.slow
def test_one_and_two_dask_workers_match_one_process(xenium_crop):
    """Default model, growth and cells pass as tasks: identical labels and tables with 1 and 2 workers."""
    from distributed import Client, LocalCluster

    sdata = xenium_crop
    gsn.tl.segment(sdata, key_added="here", block_size=300, halo=128)
    for n_workers in (1, 2):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        with cluster, Client(cluster) as client:
            gsn.tl.segment(sdata, key_added=f"w{n_workers}", block_size=300, halo=128, client=client)
        np.testing.assert_array_equal(sdata[f"w{n_workers}_labels"].values, sdata["here_labels"].values)
        np.testing.assert_array_equal(sdata[f"w{n_workers}_table"].X.toarray(), sdata["here_table"].X.toarray())


def test_blocks_on_a_local_dask_cluster_match_one_process():
    from distributed import Client, LocalCluster

    sdata, truth = disks_sdata(shape=(200, 220), seed=1)
    model = oracle_model()
    gsn.tl.segment(
        sdata, model, grow=False, key_added="local", min_area=5, center_threshold=0.2, block_size=80, halo=40
    )
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        gsn.tl.segment(
            sdata,
            model,
            grow=False,
            key_added="dask",
            min_area=5,
            center_threshold=0.2,
            block_size=80,
            halo=40,
            client=client,
        )
    np.testing.assert_array_equal(sdata["dask_labels"].values, sdata["local_labels"].values)
    assert same_cells(sdata["dask_labels"].values, truth)


def test_blocks_with_rescaling_and_auto_rna_scale():
    from spatialdata.transformations import Scale, set_transformation

    sdata, truth = disks_sdata(shape=(200, 200), seed=2)
    for name in ("dapi", "transcripts"):
        set_transformation(sdata[name], Scale([0.5, 0.5], axes=("y", "x")), to_coordinate_system="global")
    model = oracle_model()
    model.config.pixel_size = 0.5
    model.config.rna_scale = "auto"
    gsn.tl.segment(sdata, model, grow=False, key_added="whole", min_area=5, center_threshold=0.2)
    gsn.tl.segment(
        sdata, model, grow=False, key_added="blocks", min_area=5, center_threshold=0.2, block_size=64, halo=40
    )
    assert same_cells(sdata["whole_labels"].values, sdata["blocks_labels"].values)


def test_grow_turns_decoded_cells_into_whole_cells():
    sdata, truth = disks_sdata()
    model = oracle_model()
    gsn.tl.segment(sdata, model, grow=False, key_added="core", min_area=5, center_threshold=0.2)
    gsn.tl.segment(sdata, model, key_added="whole", min_area=5, center_threshold=0.2)
    core, whole = (np.asarray(sdata[f"{k}_labels"].values) for k in ("core", "whole"))
    assert core.max() > 0
    # same cells, every decoded pixel kept; growth only adds pixels where transcripts say so
    assert set(np.unique(core)) == set(np.unique(whole))
    assert np.all(whole[core > 0] == core[core > 0])
    assert sdata["whole_table"].X.sum() >= sdata["core_table"].X.sum()
    uns = sdata["whole_table"].uns["genesegnet"]
    assert uns["grow"] and uns["growth"]["n_cells"] == core.max()


def test_labels_built_on_disk_are_read_from_the_store(tmp_path, monkeypatch):
    """Rasters forced to the scratch folder: same cells; a store-backed object then reads its labels from
    its own store and the scratch copy is gone, an in-memory object reads them lazily from scratch."""
    import shutil

    import spatialdata as sd

    from gsn.blockwise import _raster

    sdata, truth = disks_sdata()
    model = oracle_model()
    options = dict(grow=False, min_area=5, center_threshold=0.2, block_size=100, halo=40)
    gsn.tl.segment(sdata, model, key_added="memory", **options)

    monkeypatch.setattr(_raster, "IN_MEMORY_BYTES", 0)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(gsn.settings, "scratch_dir", str(scratch))
    gsn.tl.segment(sdata, model, key_added="disk", **options)
    assert any(scratch.rglob("labels.zarr")), "an object without a store reads its labels from scratch"
    np.testing.assert_array_equal(np.asarray(sdata["disk_labels"].values), sdata["memory_labels"].values)

    sdata.write(tmp_path / "s.zarr")
    backed = sd.read_zarr(tmp_path / "s.zarr")
    for run in scratch.iterdir():
        shutil.rmtree(run)
    gsn.tl.segment(backed, model, key_added="stored", **options)
    assert not any(scratch.iterdir()), "the scratch copy of written labels should be removed"
    np.testing.assert_array_equal(np.asarray(backed["stored_labels"].values), sdata["memory_labels"].values)
    assert same_cells(np.asarray(backed["stored_labels"].values), truth)
    reread = sd.read_zarr(tmp_path / "s.zarr")
    np.testing.assert_array_equal(np.asarray(reread["stored_labels"].values), sdata["memory_labels"].values)

"""gsn.blockwise: the grid, rasters, the transcript index and the one driver (here and on a dask cluster)."""

import numpy as np
import pandas as pd
import pytest
from spatialdata.models import PointsModel

from gsn.blockwise import Raster, Scratch, TranscriptIndex, Window, block_grid, map_blocks


def test_grid_covers_the_image_once_and_windows_clip():
    blocks = block_grid((100, 130), 40)
    cover = np.zeros((100, 130), int)
    for i, b in enumerate(blocks):
        assert b.index == i
        cover[b.slices] += 1
        window = b.grow(10, (100, 130))
        assert window.y0 == max(b.y0 - 10, 0) and window.x1 == min(b.x1 + 10, 130)
        inner = b.within(window)
        assert (inner[0].stop - inner[0].start, inner[1].stop - inner[1].start) == b.shape
    assert (cover == 1).all() and len(blocks) == 2 * 3  # 100 = 40 + 60, 130 = 40 + 40 + 50: no thin last block
    assert {b.shape for b in blocks} == {(40, 40), (40, 50), (60, 40), (60, 50)}
    for side, size in ((5000, 1024), (1100, 1024), (2176, 1024), (1500, 1024), (10, 1024)):
        grid = block_grid((side, 1), size)
        assert all(b.y0 % size == 0 for b in grid)  # cores are whole chunks of a raster chunked by `size`
        assert all(b.shape[0] == size for b in grid[:-1])
        assert grid[-1].shape[0] <= 1.5 * size and (len(grid) == 1 or grid[-1].shape[0] >= 0.5 * size)
    with pytest.raises(ValueError, match="block_size"):
        block_grid((10, 10), 0)


@pytest.mark.parametrize("on_disk", [False, True])
def test_raster_reads_what_blocks_wrote(on_disk):
    with Scratch(in_memory_bytes=0 if on_disk else 1 << 30) as scratch:
        raster = scratch.raster("r", (2, 50, 70), np.float32, chunk=16)
        assert raster.in_memory is not on_disk
        full = np.random.default_rng(0).random((2, 50, 70), dtype=np.float32)
        for b in block_grid((50, 70), 16):
            raster.write(b, full[(slice(None), *b.slices)])
        window = Window(5, 44, 3, 61)
        np.testing.assert_array_equal(raster.read(window), full[(slice(None), *window.slices)])
        np.testing.assert_array_equal(raster.read(window, planes=1), full[1][window.slices])
        np.testing.assert_array_equal(np.asarray(raster.to_dask()), full)
        folder = scratch.folder if on_disk else None
    if folder is not None:
        assert not folder.exists()  # the scratch folder is removed


def _points(n=5000, seed=0, shape=(300, 400)):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.uniform(-10, shape[1], n), "y": rng.uniform(0, shape[0] + 5, n),
                       "gene": rng.choice(["b", "a", "c"], n)})  # fmt: skip
    return PointsModel.parse(df, feature_key="gene", npartitions=4), df


@pytest.mark.parametrize("spill", [False, True])
def test_transcript_index_windows_match_a_filter(spill, monkeypatch, caplog):
    import gsn.blockwise._transcripts as module

    points, df = _points()
    if spill:
        monkeypatch.setattr(module, "IN_MEMORY_BYTES", 100)
    with Scratch() as scratch:
        index = TranscriptIndex.from_points(points, np.eye(3), (300, 400), points_key="p", image_key="i",
                                            scratch=scratch, bucket=32)  # fmt: skip
        assert index.n == len(df)
        inside = (df.x >= 0) & (df.x < 400) & (df.y >= 0) & (df.y < 300)
        assert index.n_inside == int(inside.sum())
        assert "fall outside image 'i'" in caplog.text
        for window, margin in [
            (Window(0, 300, 0, 400), 0),
            (Window(37, 121, 200, 333), 0),
            (Window(37, 121, 5, 9), 3.5),
        ]:
            t = index.window(window, margin)
            sel = inside & (df.x >= window.x0 - margin) & (df.x < window.x1 + margin) & (df.y >= window.y0 - margin)
            sel &= df.y < window.y1 + margin
            np.testing.assert_array_equal(t.row, np.flatnonzero(sel))  # sorted by row, exactly the filter
            np.testing.assert_array_equal(t.x, df.x.to_numpy()[sel])
            assert list(index.genes[t.gene]) == list(df.gene[sel])


def _square(block, values):
    return block.index, values**2


def test_driver_here_and_on_a_cluster_give_the_same_records_in_block_order():
    from distributed import Client, LocalCluster

    blocks = block_grid((90, 90), 30)
    written = np.zeros((90, 90))

    def collect(block, result):
        written[block.slices] = result[0]
        return result

    here = map_blocks(_square, blocks, lambda b: (b, np.full(1, b.index)), collect=collect, progress=False)
    assert [r[0] for r in here] == list(range(9)) and written[89, 89] == 8
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        there = map_blocks(_square, blocks, lambda b: (b, np.full(1, b.index)), client=client, progress=False)
    assert [(i, int(v[0])) for i, v in there] == [(i, int(v[0])) for i, v in here]


def _squared_core(block, values):
    return values**2, block.index


def test_driver_writes_cores_here_and_from_workers_that_read_their_own_windows(tmp_path):
    """``write=``: cores land in the raster whoever writes them (this process, or workers sharing the disk)."""
    from distributed import Client, LocalCluster

    values = np.arange(90 * 97, dtype=np.float64).reshape(90, 97)
    source = Raster(values.shape, np.float64, chunk=30, path=tmp_path / "source.zarr")
    source.write(Window(0, 90, 0, 97), values)
    blocks = block_grid(values.shape, 30)

    def inputs(block):  # reads from disk: the workers can run it themselves
        return block, source.read(block)

    here = Raster(values.shape, np.float64, chunk=30)
    records = map_blocks(_squared_core, blocks, inputs, write=here, progress=False)
    assert records == list(range(len(blocks)))
    np.testing.assert_array_equal(here.to_numpy(), values**2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client, Scratch(tmp_path) as scratch:  # fmt: skip
        with pytest.raises(ValueError, match="on disk"):
            map_blocks(_squared_core, blocks, inputs, write=here, client=client, workers_read=True, progress=False)
        with pytest.raises(ValueError, match="whole chunks"):
            # blocks of 20 px cut the 30 px chunks of `source`: two workers would rewrite one chunk
            map_blocks(_squared_core, block_grid(values.shape, 20), inputs, write=source, client=client,
                       workers_read=True, progress=False)  # fmt: skip
        with Scratch(tmp_path) as elsewhere:  # inputs in a store the workers cannot see: this process reads
            assert not elsewhere.share_with(client, tmp_path / "not-on-the-workers.zarr")
            assert elsewhere.raster("small", (8, 8), np.int32, chunk=8).in_memory
        assert scratch.share_with(client, tmp_path)
        for workers_read in (False, True):
            out = scratch.raster(f"out{workers_read}", values.shape, np.float64, chunk=30)
            assert not out.in_memory  # a shared scratch keeps every raster on disk
            there = map_blocks(_squared_core, blocks, inputs, write=out, client=client, workers_read=workers_read,
                               progress=False)  # fmt: skip
            assert there == records
            np.testing.assert_array_equal(out.to_numpy(), values**2)


def test_second_step_after_a_cell_id_column_on_partitioned_points(tmp_path):
    """A whole-slide step after another added its cell id column to points read from zarr in partitions.

    It used to fail: the index selected each partition on its own, which numbers it 0, and the new
    column is built per partition number.
    """
    import spatialdata as sd

    import gsn

    path = gsn.datasets.synthetic_slide(tmp_path / "slide.zarr", (256, 256), tile=128, seed=1)
    sdata = sd.read_zarr(path)
    assert sdata["transcripts"].npartitions == 4
    gsn.tl.segment(sdata, block_size=128)
    first = sdata["genesegnet_table"]
    gsn.tl.cells_from_labels(sdata, "genesegnet_labels", key_added="again")
    again = sdata["again_table"]
    assert first.n_obs > 5 and again.n_obs == first.n_obs
    np.testing.assert_array_equal(again.X.toarray(), first.X.toarray())
    points = sdata["transcripts"].compute()
    np.testing.assert_array_equal(points["again_cell_id"].to_numpy(), points["genesegnet_cell_id"].to_numpy())


def test_cell_id_column_is_right_in_every_partition_read_on_its_own(tmp_path):
    """``points.partitions[i]`` after segment: each partition carries its own rows' cell ids.

    The column used to be computed from the partition number, and a selected partition is
    numbered 0, so partition 1 read on its own got partition 0's ids (or a length error).
    """
    import spatialdata as sd

    import gsn

    path = gsn.datasets.synthetic_slide(tmp_path / "slide.zarr", (256, 256), tile=128, seed=1)
    sdata = sd.read_zarr(path)
    transform_before = sd.transformations.get_transformation(sdata["transcripts"], get_all=True)
    attrs_before = dict(sdata["transcripts"].attrs["spatialdata_attrs"])
    gsn.tl.segment(sdata, block_size=128)
    points = sdata["transcripts"]
    column = "genesegnet_cell_id"
    whole = points.compute()[column].to_numpy()
    pieces = [points.partitions[i].compute()[column].to_numpy() for i in range(points.npartitions)]
    assert points.npartitions == 4 and len({len(p) for p in pieces}) > 1
    np.testing.assert_array_equal(np.concatenate(pieces), whole)
    assert (whole > 0).mean() > 0.3
    assert sd.transformations.get_transformation(points, get_all=True).keys() == transform_before.keys()
    assert points.attrs["spatialdata_attrs"] == attrs_before

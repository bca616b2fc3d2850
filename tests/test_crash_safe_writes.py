"""Writes into a zarr-backed SpatialData are all or nothing, survive SIGKILL, and reruns work."""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import spatialdata as sd
import zarr
from tests.conftest import tiny_sdata

import gsn
import gsn.io._write as write_mod
from gsn.io._write import KILL_AT_ENV, STAGING_DIR, consolidate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RESULT = ("genesegnet_labels", "genesegnet_boundaries", "genesegnet_table")
INPUTS = ("images/dapi", "labels/truth_labels", "labels/nuclei_labels", "points/transcripts")
ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import logging, sys, warnings
warnings.filterwarnings("ignore")
logging.getLogger("ome_zarr").setLevel(logging.ERROR)
import torch
torch.set_num_threads(1)
import spatialdata as sd
import gsn
sdata = sd.read_zarr(sys.argv[1])
gsn.tl.segment(sdata, grow=False, overwrite=sys.argv[2] == "1")
"""


def _folder_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _input_hashes(store: Path, extra=()) -> dict[str, dict[str, str]]:
    return {name: _folder_hashes(store / name) for name in (*INPUTS, *extra)}


def _read(store: Path) -> sd.SpatialData:
    return sd.read_zarr(store)  # on_bad_files="error": any damaged element raises


def _make_store(tmp_path, *, old_result: bool) -> Path:
    store = tmp_path / "data.zarr"
    sdata = tiny_sdata()
    sdata.write(store)
    if old_result:  # an earlier result under the same names, to be replaced with overwrite=True
        sdata = sd.read_zarr(store)
        gsn.tl.cells_from_labels(sdata, "truth_labels", key_added="genesegnet")
    return store


def _run_child(store: Path, *, overwrite: bool, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop(KILL_AT_ENV, None)
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(store), "1" if overwrite else "0"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clean_result(tmp_path_factory):
    """Labels of an uninterrupted run, to compare reruns with."""
    store = _make_store(tmp_path_factory.mktemp("clean"), old_result=False)
    sdata = sd.read_zarr(store)
    gsn.tl.segment(sdata, grow=False)
    labels = np.asarray(_read(store)["genesegnet_labels"].values)
    assert labels.max() > 0
    return labels


def _visible(sdata) -> set[str]:
    return {n for n in RESULT if n in sdata}


KILL_NEW = ["staged:genesegnet_boundaries", "journal", "moved:genesegnet_labels", "committed", "consolidated"]
KILL_OVERWRITE = [
    "staged:genesegnet_labels",
    "hidden",
    "moved-old:genesegnet_labels",
    "moved:genesegnet_boundaries",
    "committed",
]


@pytest.mark.slow
@pytest.mark.parametrize(("overwrite", "kill_at"), [(False, k) for k in KILL_NEW] + [(True, k) for k in KILL_OVERWRITE])
def test_sigkill_during_segment_write(tmp_path, clean_result, overwrite, kill_at):
    store = _make_store(tmp_path, old_result=overwrite)
    old_labels = np.asarray(_read(store)["genesegnet_labels"].values) if overwrite else None
    before = _input_hashes(store)

    done = _run_child(store, overwrite=overwrite, kill_at=kill_at)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]

    # The store is readable, shows the result whole or not at all, and the inputs are untouched.
    after_kill = _read(store)
    visible = _visible(after_kill)
    assert visible in (set(), set(RESULT)), visible
    if visible:
        labels = np.asarray(after_kill["genesegnet_labels"].values)
        assert after_kill["genesegnet_table"].n_obs == len(np.unique(labels)) - 1
        assert np.array_equal(labels, clean_result) or (overwrite and np.array_equal(labels, old_labels))
    assert _input_hashes(store) == before

    # A rerun with the same arguments cleans up and succeeds, as if the killed run had not been. Past its
    # commit the killed run's result is complete and visible; then, as after any run, the same call refuses to
    # replace it without overwrite=True.
    rerun = _run_child(store, overwrite=overwrite, kill_at=None)
    if visible and not overwrite:
        assert rerun.returncode == 1 and "already exist; pass `overwrite=True`" in rerun.stderr, rerun.stderr[-3000:]
        rerun = _run_child(store, overwrite=True, kill_at=None)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    final = _read(store)
    assert _visible(final) == set(RESULT)
    np.testing.assert_array_equal(np.asarray(final["genesegnet_labels"].values), clean_result)
    assert final["genesegnet_table"].n_obs == clean_result.max()
    assert not (store / STAGING_DIR).exists()
    assert _input_hashes(store) == before


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["staged:genesegnet_table", "moved:genesegnet_table"])
def test_killed_overwrite_rolls_back_to_the_old_result(tmp_path, kill_at):
    store = _make_store(tmp_path, old_result=True)
    old = _input_hashes(store, extra=("labels/genesegnet_labels", "shapes/genesegnet_boundaries",
                                      "tables/genesegnet_table"))  # fmt: skip
    old_root = json.loads((store / "zarr.json").read_text())
    assert _run_child(store, overwrite=True, kill_at=kill_at).returncode == -signal.SIGKILL
    write_mod.recover(store)
    # Every folder of the old result is back, byte for byte, and listed as before.
    assert _input_hashes(store, extra=tuple(old)[len(INPUTS) :]) == old
    assert json.loads((store / "zarr.json").read_text()) == old_root
    assert _visible(_read(store)) == set(RESULT)


class Boom(RuntimeError):
    """The failure injected at a write point."""

    pass


def _fail_at(monkeypatch, point):
    def kill_point(name):
        if name == point:
            raise Boom(name)

    monkeypatch.setattr(write_mod, "_kill_point", kill_point)


def _store_state(store: Path):
    files = _folder_hashes(store)
    files.pop("zarr.json")
    return files, json.loads((store / "zarr.json").read_text())


@pytest.mark.parametrize("point", ["staged:genesegnet_boundaries", "journal", "moved:genesegnet_boundaries"])
def test_failure_mid_write_leaves_store_and_object_unchanged(tmp_path, monkeypatch, point):
    store = _make_store(tmp_path, old_result=False)
    sdata = sd.read_zarr(store)
    before = _store_state(store)
    _fail_at(monkeypatch, point)
    with pytest.raises(Boom):
        gsn.tl.segment(sdata, grow=False)
    assert _store_state(store) == before
    assert not _visible(sdata) and not _visible(_read(store))
    monkeypatch.undo()
    gsn.tl.segment(sdata, grow=False)  # the same call then works
    assert _visible(_read(store)) == set(RESULT)


@pytest.mark.parametrize("point", ["staged:genesegnet_labels", "hidden", "moved-old:genesegnet_labels"])
def test_failed_overwrite_keeps_the_old_result(tmp_path, monkeypatch, point):
    store = _make_store(tmp_path, old_result=True)
    sdata = sd.read_zarr(store)
    old_labels = np.asarray(sdata["genesegnet_labels"].values)
    before = _store_state(store)
    _fail_at(monkeypatch, point)
    with pytest.raises(Boom):
        gsn.tl.segment(sdata, grow=False, overwrite=True)
    assert _store_state(store) == before
    np.testing.assert_array_equal(np.asarray(_read(store)["genesegnet_labels"].values), old_labels)
    np.testing.assert_array_equal(np.asarray(sdata["genesegnet_labels"].values), old_labels)


def test_leftover_staging_without_journal_is_removed(tmp_path):
    store = _make_store(tmp_path, old_result=False)
    junk = store / STAGING_DIR / "123-abc" / "data.zarr" / "labels" / "half"
    junk.mkdir(parents=True)
    (junk / "zarr.json").write_text("{")  # a half-written element
    sdata = sd.read_zarr(store)
    gsn.tl.cells_from_labels(sdata, "truth_labels")
    assert not (store / STAGING_DIR).exists()
    assert {"truth_boundaries", "truth_table"} <= set(_read(store).shapes) | set(_read(store).tables)


def test_consolidated_metadata_matches_zarr(tmp_path):
    store = _make_store(tmp_path, old_result=True)
    ours = json.loads((store / "zarr.json").read_text())
    zarr.consolidate_metadata(str(store))
    assert json.loads((store / "zarr.json").read_text()) == ours
    consolidate(store)
    assert json.loads((store / "zarr.json").read_text()) == ours


def test_points_column_on_backed_object_warns(tmp_path, caplog):
    store = _make_store(tmp_path, old_result=False)
    sdata = sd.read_zarr(store)
    with caplog.at_level(logging.WARNING, logger="gsn"):
        gsn.tl.assign_transcripts(sdata, "truth_labels")
    assert "Column 'truth_cell_id' was added to points 'transcripts' in memory only" in caplog.text
    assert "truth_cell_id" in sdata["transcripts"].columns
    assert "truth_cell_id" not in _read(store)["transcripts"].columns


@pytest.mark.slow
def test_attrs_are_part_of_the_write(tmp_path):
    """Sopa's attrs travel with the elements: a run killed past its commit gets them when it is finished."""
    store = _make_store(tmp_path, old_result=False)
    assert _run_child(store, overwrite=False, kill_at="committed").returncode == -signal.SIGKILL
    assert gsn.SopaAttrs.BOUNDARIES not in _read(store).attrs  # not yet finished
    write_mod.recover(store)
    attrs = _read(store).attrs
    assert attrs[gsn.SopaAttrs.BOUNDARIES] == "genesegnet_boundaries"
    assert attrs[gsn.SopaAttrs.IMAGE] == "dapi" and attrs[gsn.SopaAttrs.POINTS] == "transcripts"

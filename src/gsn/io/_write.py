"""Adding elements to a SpatialData object, and to its zarr store when it is backed: all or nothing.

I/O is kept apart from computation: every public function computes all of its results first and
hands them here together, so a failure while computing leaves the object untouched.

Writing into a zarr store is a small transaction, so that a failure or a ``SIGKILL`` at any moment
never leaves a partial result visible to readers, an unreadable store or a store a rerun refuses:

1. The new elements are written into a staging store inside the target, ``<store>/.gsn-staging/<run>/``
   (a hidden folder without zarr metadata: zarr and spatialdata do not see it).
2. A journal file in the staging folder records which element folders move where. From then on
   the staged elements are complete.
3. If elements are replaced, they are first dropped from the store's consolidated metadata, which is
   the list of elements ``spatialdata.read_zarr`` reads, so the store stays readable while their
   folders move.
4. Old folders move into the staging folder, new folders into the store (``os.replace``, atomic on a
   local file system); the labels group's list of labels is updated.
5. The journal is marked committed, and the consolidated metadata is rewritten from the folders on
   disk (written to a temporary file and renamed, so a reader sees the old or the new list, never
   half a file). Then the staging folder, with the replaced elements, is deleted.

Every write first recovers what an interrupted one left: a staging folder without journal is
deleted; an uncommitted journal is rolled back (new folders out, old folders back, metadata
rebuilt); a committed journal is rolled forward. Elements that were in the store before are never
opened for writing: only the folders named in the call move, and only with ``overwrite=True``.
Stores that are not on a local file system are written with spatialdata's ``write_element``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask
import spatialdata as sd

from .._logging import logger
from ..blockwise import serial_io

STAGING_DIR = ".gsn-staging"
JOURNAL = "journal.json"
GROUPS = ("images", "labels", "points", "shapes", "tables")
# Test hook: the process kills itself (SIGKILL) when it reaches the named point of a write.
KILL_AT_ENV = "GSN_TEST_KILL_AT"


def _kill_point(name: str) -> None:
    if os.environ.get(KILL_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _on_disk(sdata: sd.SpatialData) -> set[str]:
    if not sdata.is_backed():
        return set()
    try:
        return {path.split("/", 1)[1] for path in sdata.elements_paths_on_disk()}
    except (FileNotFoundError, ValueError, KeyError):  # store moved or deleted by the user
        return set()


def _local_store(sdata: sd.SpatialData) -> Path | None:
    if not sdata.is_backed() or sdata.path is None:
        return None
    path = Path(str(sdata.path))
    return path if (path / "zarr.json").is_file() else None


# ---------------------------------------------------------------------------------------------- files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never a part (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def _has_consolidated(store: Path) -> bool:
    return bool(_read_json(store / "zarr.json").get("consolidated_metadata"))


def consolidate(store: Path, *, hide: tuple[str, ...] = ()) -> None:
    """Rewrite the store's consolidated metadata from the ``zarr.json`` files on disk, atomically.

    The same content as :func:`zarr.consolidate_metadata`, written through a temporary file and a
    rename. Hidden folders (``.name``) are skipped; so are the elements in ``hide`` (``"group/name"``).
    """
    flat: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(store):
        rel = Path(dirpath).relative_to(store).as_posix()
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (d if rel == "." else f"{rel}/{d}") not in hide
        )
        if rel == "." or "zarr.json" not in filenames:
            continue
        node = _read_json(Path(dirpath) / "zarr.json")
        if node.get("node_type") == "group":
            node["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": {}}
        flat[rel] = node
    root = _read_json(store / "zarr.json")
    root["consolidated_metadata"] = {"kind": "inline", "must_understand": False, "metadata": flat}
    _write_json(store / "zarr.json", root)


def _set_label_names(store: Path, add: list[str] = (), remove: list[str] = ()) -> None:
    """Keep the labels group's ``ome.labels`` list in step with the label folders (as ome-zarr writes it)."""
    path = store / "labels" / "zarr.json"
    if not path.is_file():
        return
    meta = _read_json(path)
    ome = meta.setdefault("attributes", {}).setdefault("ome", {})
    names = [n for n in ome.get("labels", []) if n not in remove]
    names += [n for n in add if n not in names]
    if names != ome.get("labels", []):
        ome["labels"] = names
        _write_json(path, meta)


# ---------------------------------------------------------------------------------------------- transaction
def _staged_folders(data: Path) -> list[tuple[str, str]]:
    """``(group, name)`` of every element in a staging store."""
    found = []
    for group in GROUPS:
        for child in sorted((data / group).iterdir()) if (data / group).is_dir() else []:
            if (child / "zarr.json").is_file():
                found.append((group, child.name))
    return found


def _group_of(store: Path, name: str) -> str | None:
    for group in GROUPS:
        if (store / group / name / "zarr.json").is_file():
            return group
    return None


def _roll_back(store: Path, stage: Path, journal: dict) -> None:
    data, old = stage / "data.zarr", stage / "old"
    for move in reversed(journal["moves"]):
        group, name = move["group"], move["name"]
        target = store / group / name
        if move.get("new", True) and target.exists() and not (data / group / name).exists():
            (data / group).mkdir(parents=True, exist_ok=True)
            os.replace(target, data / group / name)
        old_group = move.get("old_group")
        if old_group is not None and (old / old_group / name).exists():
            os.replace(old / old_group / name, store / old_group / name)
    for group in journal.get("new_groups", []):  # groups this write created, now empty again
        if (store / group).is_dir() and [p.name for p in (store / group).iterdir()] == ["zarr.json"]:
            shutil.rmtree(store / group)
    _set_label_names(store, remove=[m["name"] for m in journal["moves"] if m["group"] == "labels" and m.get("new", True)
                                    and not (store / "labels" / m["name"]).exists()])  # fmt: skip
    _set_label_names(store, add=[m["name"] for m in journal["moves"] if m.get("old_group") == "labels"
                                 and (store / "labels" / m["name"]).exists()])  # fmt: skip
    if journal.get("consolidated"):
        consolidate(store)


def _set_attrs(store: Path, attrs: Mapping[str, Any]) -> None:
    """Merge ``attrs`` into the store's root attributes (what ``sdata.attrs`` is read from), atomically."""
    root = _read_json(store / "zarr.json")
    current = root.setdefault("attributes", {})
    if any(current.get(k) != v for k, v in attrs.items()):
        current.update(attrs)
        _write_json(store / "zarr.json", root)


def _finish(store: Path, journal: dict) -> None:
    if journal.get("attrs"):
        _set_attrs(store, journal["attrs"])
    _set_label_names(store, add=[m["name"] for m in journal["moves"] if m["group"] == "labels" and m.get("new", True)],
                     remove=[m["name"] for m in journal["moves"] if m.get("old_group") == "labels"
                             and not (store / "labels" / m["name"]).exists()])  # fmt: skip
    if journal.get("consolidated"):
        consolidate(store)


def recover(store: str | os.PathLike) -> list[str]:
    """Clean up after writes into ``store`` that were interrupted (a crash, a kill, a full disk).

    Uncommitted writes are rolled back, so the store is as before them; committed ones are
    finished. Called by every gsn write into a store; safe to call at any time when no other
    process writes into it.

    Returns
    -------
    Names of the elements that a committed write added or replaced.
    """
    store = Path(store)
    root = store / STAGING_DIR
    finished: list[str] = []
    for stage in sorted(root.iterdir()) if root.is_dir() else []:
        journal_file = stage / JOURNAL
        journal = _read_json(journal_file) if journal_file.is_file() else None
        if journal is not None and journal.get("state") == "committed":
            _finish(store, journal)
            finished += [m["name"] for m in journal["moves"] if m.get("new", True)]
            logger.warning("Finished an interrupted gsn write into %s (%s).", store,
                           ", ".join(m["name"] for m in journal["moves"]))  # fmt: skip
        elif journal is not None:
            _roll_back(store, stage, journal)
            logger.warning("Rolled back an interrupted gsn write into %s (%s); the store is as before it.", store,
                           ", ".join(m["name"] for m in journal["moves"]))  # fmt: skip
        shutil.rmtree(stage)
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    return finished


def _transaction(store: Path, elements: Mapping[str, Any], remove: list[str], attrs: Mapping[str, Any]) -> None:
    """Write ``elements`` into ``store`` and drop ``remove``, all or nothing (see the module docstring)."""
    stage = store / STAGING_DIR / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    data = stage / "data.zarr"
    stage.mkdir(parents=True)
    journal: dict[str, Any] | None = None
    try:
        staging = None
        for name, element in elements.items():
            # Lazy elements (whole-slide labels) stream into the store one chunk at a time, in this thread.
            with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"), serial_io():
                warnings.filterwarnings("ignore", category=UserWarning)
                if staging is None:
                    staging = sd.SpatialData.init_from_elements({name: element})
                    staging.write(data)
                else:
                    staging[name] = element
                    staging.write_element(name)
            _kill_point(f"staged:{name}")
        staged = _staged_folders(data) if staging is not None else []
        moves = []
        for group, name in staged:
            moves.append({"group": group, "name": name, "new": True, "old_group": _group_of(store, name)})
        for name in remove:
            group = _group_of(store, name)
            if group is not None:
                moves.append({"group": group, "name": name, "new": False, "old_group": group})
        new_groups = sorted({g for g, _ in staged if not (store / g / "zarr.json").is_file()})
        journal = {
            "state": "staged",
            "moves": moves,
            "new_groups": new_groups,
            "consolidated": _has_consolidated(store),
            "attrs": dict(attrs),
        }
        _write_json(stage / JOURNAL, journal)
        _kill_point("journal")

        replaced = [f"{m['old_group']}/{m['name']}" for m in moves if m["old_group"] is not None]
        if replaced and journal["consolidated"]:
            consolidate(store, hide=tuple(replaced))
            _kill_point("hidden")
        for m in moves:
            group, name = m["group"], m["name"]
            if m["old_group"] is not None:
                (stage / "old" / m["old_group"]).mkdir(parents=True, exist_ok=True)
                os.replace(store / m["old_group"] / name, stage / "old" / m["old_group"] / name)
                _kill_point(f"moved-old:{name}")
            if m["new"]:
                if not (store / group / "zarr.json").is_file():
                    (store / group).mkdir(exist_ok=True)
                    shutil.copyfile(data / group / "zarr.json", store / group / "zarr.json")
                os.replace(data / group / name, store / group / name)
                _kill_point(f"moved:{name}")
        _fsync_dir(store)
        journal["state"] = "committed"
        _write_json(stage / JOURNAL, journal)
        _kill_point("committed")
    except BaseException:
        if journal is not None:
            _roll_back(store, stage, journal)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _finish(store, journal)
    _kill_point("consolidated")
    shutil.rmtree(stage)
    root = store / STAGING_DIR
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


# ---------------------------------------------------------------------------------------------- public
def add_elements(
    sdata: sd.SpatialData,
    elements: Mapping[str, Any],
    *,
    overwrite: bool = False,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Put ``elements`` into ``sdata``; when it is backed by a zarr store, write them there, all or nothing.

    A value ``None`` removes the element of that name (with ``overwrite=True``). Elements in the
    store other than those named here are never touched; those named here are replaced only with
    ``overwrite=True``, and an old element stays in the store until its replacement is complete.
    ``attrs`` are merged into ``sdata.attrs`` (and the store's root attributes) with the elements,
    as part of the same transaction. On any failure both the object and the store are left as they were.
    """
    attrs = dict(attrs or {})
    for name in elements:
        if name in sdata and not overwrite:
            raise ValueError(f"Element {name!r} already exists; pass `overwrite=True` to replace it.")
    store = _local_store(sdata)
    if store is not None:
        finished = set(recover(store))
        on_disk = {n for n in elements if _group_of(store, n) is not None}
        # A name on disk but not in this object: written by another process, or by an interrupted
        # run of this very call that recover() just finished (then it is replaced without asking).
        foreign = sorted(n for n in on_disk if n not in sdata and n not in finished)
        if foreign and not overwrite:
            raise ValueError(
                f"Element(s) {foreign} exist in the store {store} but not in this SpatialData object; read the store "
                "again (spatialdata.read_zarr) or pass `overwrite=True` to replace them."
            )
        new = {n: e for n, e in elements.items() if e is not None}
        gone = [n for n, e in elements.items() if e is None and n in on_disk]
        _transaction(store, new, remove=gone, attrs=attrs)
        logger.info("Wrote %s to %s", ", ".join(repr(n) for n in new), store)
    elif sdata.is_backed():
        on_disk = _on_disk(sdata)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*overwriting.*", category=UserWarning)
        for name, element in elements.items():
            if name in sdata:
                del sdata[name]
            if element is not None:
                sdata[name] = element
    if store is None and sdata.is_backed():  # remote stores: spatialdata's own element writes
        for name, element in elements.items():
            if name in on_disk:
                sdata.delete_element_from_disk(name)
            if element is not None:
                sdata.write_element(name)
                logger.info("Wrote %r to %s", name, sdata.path)
    sdata.attrs.update(attrs)
    if store is None and sdata.is_backed() and attrs:
        sdata.write_attrs()


def warn_points_column_in_memory(sdata: sd.SpatialData, points_key: str, column: str) -> None:
    """Say at WARNING level that a new points column is not in the zarr store of a backed object.

    The points are an input: gsn never rewrites them in the store. The column lives in memory.
    """
    if sdata.is_backed():
        logger.warning(
            "Column %r was added to points %r in memory only: gsn does not rewrite the transcripts in the store %s. "
            "To keep it, write the object to a new store (`sdata.write(new_path)`) or save the column yourself "
            "(e.g. `sdata[%r][[%r]].compute().to_parquet(...)`).",
            column, points_key, sdata.path, points_key, column,
        )  # fmt: skip


def reopen_from_store(sdata: sd.SpatialData, name: str) -> bool:
    """Point the in-memory labels element ``name`` at its copy in the object's zarr store (lazily).

    Whole-slide labels are built in a scratch folder; once written into the store, the object should
    read them from there, so the scratch folder can go. Returns False when the object is not backed
    by a local store holding the element (the element is then left as it is).
    """
    store = _local_store(sdata)
    if store is None or _group_of(store, name) != "labels":
        return False
    fresh = sd.read_zarr(store, selection=("labels",))[name]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        del sdata[name]
        sdata[name] = fresh
    return True

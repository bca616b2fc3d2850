"""The one block driver: runs a pure per-block kernel over a grid, here or on a dask cluster.

Every whole-slide step of gsn (inference, decoding, growth, polygons, tables, assignment) is a kernel
``kernel(*shared, *inputs(block)) -> result`` on plain arrays. The driver cuts the inputs for each
block (in this process, from lazy sources), runs the kernel here or as a ``dask.distributed`` task,
and hands each result to ``collect`` in this process, which writes the block's core into a raster
or keeps a small record. Results may arrive in any order; ``collect`` writes disjoint cores and
records are returned in block order, so the outcome does not depend on scheduling.

On a cluster, ``shared`` objects (the model) are sent to the workers once; the inputs of at most a
few blocks per worker are in flight at a time, so memory stays bounded on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ._grid import Block


def _release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise, and RSS grows block after block)."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None

# Blocks in flight per worker thread on a cluster: enough to keep workers busy while the client
# cuts the next inputs, few enough to bound memory.
_IN_FLIGHT_PER_THREAD = 2


def map_blocks(
    kernel: Callable[..., Any],
    blocks: Sequence[Block],
    inputs: Callable[[Block], tuple],
    *,
    shared: tuple = (),
    collect: Callable[[Block, Any], Any] | None = None,
    client: Any | None = None,
    progress: bool = True,
    desc: str = "blocks",
) -> list[Any]:
    """Run ``kernel`` on every block and return what ``collect`` kept, in block order.

    Parameters
    ----------
    kernel
        Pure function ``kernel(*shared, *inputs(block))``; module-level (picklable) for a cluster.
    blocks
        The grid.
    inputs
        Cuts a block's arguments (numpy arrays, small objects) in this process.
    shared
        Arguments common to every block (e.g. the model), sent to a cluster once.
    collect
        Called in this process with each block and its result; its return value is kept
        (default: the result itself).
    client
        A ``dask.distributed.Client``; ``None`` runs the blocks here, one after the other.
    progress
        Show a progress bar.
    desc
        Label of the progress bar.
    """
    from tqdm.auto import tqdm

    from ._raster import serial_io

    collect = collect or (lambda block, result: result)
    kept: dict[int, Any] = {}
    with serial_io(), tqdm(total=len(blocks), desc=desc, unit="block", disable=not progress or len(blocks) < 2) as bar:
        if client is None:
            for block in blocks:
                kept[block.index] = collect(block, kernel(*shared, *inputs(block)))
                _release_memory()
                bar.update(1)
        else:
            _on_cluster(kernel, blocks, inputs, shared, collect, client, kept, bar)
    return [kept[b.index] for b in blocks]


def _on_cluster(kernel, blocks, inputs, shared, collect, client, kept, bar) -> None:
    from distributed import as_completed

    # scatter(broadcast=True): one copy per worker, referenced by every task.
    shared_futures = [client.scatter(s, broadcast=True, hash=False) for s in shared]
    n_threads = sum(client.nthreads().values()) or 1
    limit = max(2, _IN_FLIGHT_PER_THREAD * n_threads)
    pending = iter(blocks)
    by_future = {}
    queue = as_completed()

    def submit_next() -> None:
        block = next(pending, None)
        if block is not None:
            future = client.submit(kernel, *shared_futures, *inputs(block), pure=False)
            by_future[future] = block
            queue.add(future)

    for _ in range(limit):
        submit_next()
    for future in queue:
        block = by_future.pop(future)
        kept[block.index] = collect(block, future.result())
        future.release()
        bar.update(1)
        submit_next()

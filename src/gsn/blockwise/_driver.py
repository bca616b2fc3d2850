"""The one block driver: runs a pure per-block kernel over a grid, here or on a dask cluster.

Every whole-slide step of gsn (inference, decoding, growth, polygons, tables, assignment) is a kernel
``kernel(*shared, *inputs(block)) -> result`` on plain arrays. The driver cuts the inputs for each
block (from lazy sources), runs the kernel here or as a ``dask.distributed`` task, writes the block's
core into a raster (``write``) and hands the rest, a small record, to ``collect`` in this process.
Results may arrive in any order; cores are disjoint chunks of the raster and records are returned
in block order, so the outcome does not depend on scheduling.

On a cluster, ``shared`` objects (the model) are sent to the workers once; at most a few blocks per
worker are in flight at a time, so memory stays bounded on both sides. When the workers share this
process's filesystem (``workers_read``: every raster on disk, see
:meth:`gsn.blockwise.Scratch.share_with`), each worker cuts its block's inputs and writes its core
itself: this process then only schedules and keeps records, instead of moving every window through
its sockets while it competes with the workers for the same cores.
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

# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TUNED = False


def _tune_malloc() -> None:
    """Let large arrays come from the heap again in this process (once; called on dask workers).

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting that turns off glibc's
    adaptive thresholds, so every array over 128 KB becomes a fresh memory map that the kernel must
    zero page by page, and every free gives it back. A block's kernels allocate hundreds of such
    arrays: on a 4096 px slide inference took 1.47x and growth 1.34x as long in one process with that
    variable set (``benchmarks/bench_speed_scale.py``, dask part). With glibc's own upper limits
    (32 MiB maps, 64 MiB kept at the top of the heap) they run as fast as without it; the memory
    still goes back to the system after each block (:func:`_release_memory`).
    """
    global _TUNED
    if _TUNED:
        return
    _TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)
    except (OSError, AttributeError):  # not glibc
        pass


class _OnWorker:
    """A kernel as a dask task: tunes the worker's allocator first and hands memory back after."""

    def __init__(self, kernel: Callable[..., Any]):
        self.kernel = kernel

    def __call__(self, *args):
        _tune_malloc()
        try:
            return self.kernel(*args)
        finally:
            _release_memory()


def _import_kernels() -> None:
    """Import what gsn's kernels need (torch and the network among them) in a worker process."""
    import gsn.models  # noqa: F401

    _tune_malloc()


def warm_up(client: Any | None) -> None:
    """Start importing gsn on every worker of ``client`` now, in parallel, without waiting.

    A worker imports torch and the network when it first unpickles the model (about 2.5 s on a CPU).
    Left to the first scatter, that happens one worker after the other (a broadcast copies worker to
    worker), so on 2 workers inference started 3.5 s later than on one (``bench_speed_scale.py``, dask
    part). Called by the public functions that take a ``client`` right after they validate their
    arguments, so the imports overlap the work done in this process before the first blocks.
    """
    if client is not None:
        client.run(_import_in_background, wait=False)


async def _import_in_background() -> None:
    # client.run(wait=False) takes coroutines only; the import runs in a thread so that the worker's
    # event loop (heartbeats, transfers) is not held for seconds.
    import asyncio

    await asyncio.get_running_loop().run_in_executor(None, _import_kernels)


# Blocks in flight per worker thread on a cluster: enough to keep workers busy while the client
# cuts the next inputs, few enough to bound memory.
_IN_FLIGHT_PER_THREAD = 2


def _finish(kernel: Callable[..., Any], write: Any | None, block: Block, args: tuple) -> Any:
    """Run ``kernel``; with ``write``, store the core it returns and give back only its record."""
    return _store(write, block, kernel(*args))


def _store(write: Any | None, block: Block, result: Any) -> Any:
    """Write the core of a kernel's result (a ``(core, record)`` pair, or a bare core) and return the record."""
    if write is None:
        return result
    core, record = result if isinstance(result, tuple) else (result, None)
    write.write(block, core)
    return record


class _CutOnWorker:
    """A block as a dask task that cuts its own inputs and writes its own core (workers sharing the disk)."""

    def __init__(self, kernel: Callable[..., Any], write: Any | None, n_shared: int):
        self.kernel, self.write, self.n_shared = kernel, write, n_shared

    def __call__(self, *args):
        from ._raster import serial_io

        shared, inputs, block = args[: self.n_shared], args[self.n_shared], args[self.n_shared + 1]
        _tune_malloc()
        try:
            with serial_io():
                return _finish(self.kernel, self.write, block, (*shared, *inputs(block)))
        finally:
            _release_memory()


def map_blocks(
    kernel: Callable[..., Any],
    blocks: Sequence[Block],
    inputs: Callable[[Block], tuple],
    *,
    shared: tuple = (),
    write: Any | None = None,
    collect: Callable[[Block, Any], Any] | None = None,
    client: Any | None = None,
    workers_read: bool = False,
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
        Cuts a block's arguments (numpy arrays, small objects), in this process or, with
        ``workers_read``, on the worker that runs the block.
    shared
        Arguments common to every block (e.g. the model), sent to a cluster once.
    write
        A :class:`gsn.blockwise.Raster` chunked like the grid: the kernel then returns ``(core, record)``
        or just ``core`` (the block's values), which is written into it; ``record`` goes on to ``collect``.
    collect
        Called in this process with each block and its result (the record, with ``write``); its
        return value is kept (default: the result itself).
    client
        A ``dask.distributed.Client``; ``None`` runs the blocks here, one after the other.
    workers_read
        On a cluster, let the workers cut the inputs and write the cores themselves: ``inputs`` is
        sent to each worker once and must read only what the workers can reach (rasters on a folder
        they share, lazy arrays), and ``write`` must be on disk.
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
                kept[block.index] = collect(block, _finish(kernel, write, block, (*shared, *inputs(block))))
                _release_memory()
                bar.update(1)
        else:
            if workers_read and write is not None and write.in_memory:
                raise ValueError("workers_read needs a `write` raster on disk (Scratch.share_with).")
            if workers_read and write is not None and not all(write.whole_chunks(b) for b in blocks):
                # zarr rewrites a chunk whole: two workers writing parts of one chunk would lose one part
                raise ValueError("workers_read needs blocks made of whole chunks of `write` (same block size).")
            _on_cluster(kernel, blocks, inputs, shared, write, collect, client, workers_read, kept, bar)
    return [kept[b.index] for b in blocks]


def _on_cluster(kernel, blocks, inputs, shared, write, collect, client, workers_read, kept, bar) -> None:
    from distributed import as_completed

    if shared or workers_read:
        # Every worker imports gsn (in parallel) before the shared objects are copied to them, which
        # would otherwise import it one worker after the other; fast when warm_up already did it.
        client.run(_import_kernels)
    # scatter(broadcast=True): one copy per worker, referenced by every task.
    shared_futures = [client.scatter(s, broadcast=True, hash=False) for s in shared]
    if workers_read:
        shared_futures.append(client.scatter(inputs, broadcast=True, hash=False))
        task = _CutOnWorker(kernel, write, len(shared))
    else:
        task = _OnWorker(kernel)
    n_threads = sum(client.nthreads().values()) or 1
    limit = max(2, _IN_FLIGHT_PER_THREAD * n_threads)
    pending = iter(blocks)
    by_future = {}
    queue = as_completed()

    def submit_next() -> None:
        block = next(pending, None)
        if block is not None:
            args = (block,) if workers_read else inputs(block)
            future = client.submit(task, *shared_futures, *args, pure=False)
            by_future[future] = block
            queue.add(future)

    for _ in range(limit):
        submit_next()
    for future in queue:
        block = by_future.pop(future)
        result = future.result()
        kept[block.index] = collect(block, result if workers_read else _store(write, block, result))
        future.release()
        bar.update(1)
        submit_next()

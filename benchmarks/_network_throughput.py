"""Throughput of the inference network against the CPU's matmul speed, in one run.

Run: ``python benchmarks/_network_throughput.py [--quick] [--compile]`` (about 3 minutes on an idle
2-core CPU; ``--quick`` about 1 minute; ``--compile`` adds a minute or more of compilation). Other
benchmarks import :func:`network_rows`.

For each torch thread count (1, 2 and the default of :class:`gsn.models.TileRunner`, at most the
CPUs this process may use), the run measures

- an fp32 and a bf16 square matmul with as many FLOPs as one network pass over one tile (the
  ceiling the network's convolutions could reach on this CPU);
- the default model's network (``gsn.models.as_model(None)``, 2 input channels) on 256 px tiles in
  batches of 1, 2, 4 and 8, in each variant that was tried:

  - ``fp32 eager``: the network as it is, channels-last (gsn's inference before the runner);
  - ``fp32 folded``: :class:`gsn.models.TileRunner` in fp32 (batch norm folded, fused oneDNN
    convolutions);
  - ``bf16 eager``: the network as it is under ``torch.autocast(bfloat16)``;
  - ``bf16 folded``: :class:`~gsn.models.TileRunner` in bf16 (the default on CPUs with native bf16);
  - ``bf16 folded module``: the same folding as a plain module (the path CUDA and ``torch.compile``
    use), to show what the fused oneDNN primitives add;
  - ``fp32/bf16 jit freeze``: ``torch.jit.trace`` + ``torch.jit.optimize_for_inference`` of the
    network (freezing, conv + batch norm folding, oneDNN layouts);
  - ``bf16 compiled`` (``--compile`` only): :class:`~gsn.models.TileRunner` with ``compile=True``.

FLOPs are those of the original network, counted with :class:`torch.utils.flop_counter.FlopCounterMode`
(convolutions only: 2 per multiply-accumulate), so a variant that skips work does not look faster
per FLOP. ``s/Mpx`` is seconds per million tile pixels (one pass; 50 % tile overlap makes an
image's megapixel about four tile megapixels). Each number is the best of repeated calls, which
is robust to other jobs on a shared machine; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
import warnings

import numpy as np
import torch

TILE = 256
BATCHES = (1, 2, 4, 8)


def _best(fn, *, min_time: float, min_calls: int = 3, warmup: int = 2) -> float:
    """Best wall-clock seconds of one call of ``fn`` over at least ``min_calls`` calls and ``min_time`` s."""
    for _ in range(warmup):
        fn()
    best, spent, calls = np.inf, 0.0, 0
    while calls < min_calls or spent < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return best


def matmul_gflops(n: int, dtype: torch.dtype, *, min_time: float) -> float:
    """GFLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` with the current torch threads."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    return 2 * n**3 / _best(lambda: torch.mm(a, b, out=out), min_time=min_time) / 1e9


def _maps(out) -> torch.Tensor:
    """What predict_maps took from the eager network: sigmoids and offsets, fp32 (traced: a plain tuple)."""
    mask, center, offsets = out
    return torch.cat([torch.sigmoid(mask), torch.sigmoid(center), offsets], 1).float()


def _variants(net, *, compile: bool) -> dict:
    """Name -> factory(batch, threads) returning a function of one input tensor (and a closer)."""
    from gsn.models import TileRunner
    from gsn.models._runner import _FoldedUNet, fold_network

    cl = torch.channels_last
    eager = copy.deepcopy(net).eval().to(memory_format=cl)

    def eager_fp32(batch, threads):
        return lambda x: _maps(eager(x.contiguous(memory_format=cl))), None

    def eager_bf16(batch, threads):
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return _maps(eager(x.contiguous(memory_format=cl)))

        return run, None

    def runner(precision, compiled=False):
        def make(batch, threads):
            # max_batch: one forward pass per batch, so the batch column measures the pass size.
            r = TileRunner(net, "cpu", precision=precision, threads=threads, compile=compiled, max_batch=batch)
            return r, r.close

        return make

    def module_bf16(batch, threads):
        m = _FoldedUNet(fold_network(net), torch.bfloat16).eval().to(memory_format=cl)
        return lambda x: m(x.contiguous(memory_format=cl)).float(), None

    def jit(dtype):
        def make(batch, threads):
            src = copy.deepcopy(net).eval().to(dtype).to(memory_format=cl)
            example = torch.zeros(batch, net.in_channels, TILE, TILE, dtype=dtype).contiguous(memory_format=cl)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.optimize_for_inference(torch.jit.trace(src, example, check_trace=False))
            return lambda x: _maps(traced(x.to(dtype).contiguous(memory_format=cl))), None

        return make

    variants = {
        "fp32 eager": eager_fp32,
        "fp32 folded": runner("fp32"),
        "bf16 eager": eager_bf16,
        "bf16 folded": runner("bf16"),
        "bf16 folded module": module_bf16,
        "fp32 jit freeze": jit(torch.float32),
        "bf16 jit freeze": jit(torch.bfloat16),
    }
    if compile:
        variants["bf16 compiled"] = runner("bf16", compiled=True)
    return variants


def network_rows(*, quick: bool = False, compile: bool = False) -> list[dict]:
    """Measure matmuls and every network variant; one dict per row (see the module docstring).

    Parameters
    ----------
    quick
        Batches 2 (the runner's default pass) and 8 (the old default) only, shorter timings (about a
        minute on 2 cores).
    compile
        Also measure ``torch.compile`` (its compilation time is in the row's ``compile_s``).

    Returns
    -------
    Rows with ``what`` (``"matmul"`` or ``"network"``), ``variant``, ``threads``, ``batch``,
    ``gflops``, ``ratio_bf16_matmul`` (to the bf16 matmul at the same thread count) and, for the
    network, ``ms_per_tile`` and ``s_per_mpx``.
    """
    import gsn
    from gsn.models import as_model
    from gsn.models._runner import CPU_PASS_PIXELS, cpu_count, default_threads

    gsn.settings.progress = False
    net = as_model(None).net.eval()
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, net.in_channels, TILE, TILE))
    flops_tile = counter.get_total_flops()
    n_mm = int(round((flops_tile / 2) ** (1 / 3) / 64) * 64)  # as many FLOPs as one tile, multiple of 64
    min_time = 0.4 if quick else 1.5
    batches = (2, 8) if quick else BATCHES
    default_pass = max(1, round(CPU_PASS_PIXELS / (TILE * TILE)))
    threads_list = sorted({1, min(2, cpu_count()), default_threads()})
    saved = torch.get_num_threads()
    variants = _variants(net, compile=compile)
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            mm = {name: matmul_gflops(n_mm, dtype, min_time=min_time)
                  for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}  # fmt: skip
            for name, gf in mm.items():
                rows.append({"what": "matmul", "variant": f"{name} matmul {n_mm}^3", "threads": threads,
                             "batch": None, "gflops": gf, "ratio_bf16_matmul": gf / mm["bf16"]})  # fmt: skip
            for variant, make in variants.items():
                for batch in batches:
                    if variant == "bf16 compiled" and batch != default_pass:
                        continue  # each batch shape compiles anew; the runner's default pass is enough to judge
                    x = torch.from_numpy(rng.random((batch, net.in_channels, TILE, TILE), dtype=np.float32))
                    t0 = time.perf_counter()
                    fn, close = make(batch, threads)
                    with torch.inference_mode():
                        fn(x)  # compiles, if it does
                        setup = time.perf_counter() - t0
                        t = _best(lambda fn=fn, x=x: fn(x), min_time=min_time)
                    if close is not None:
                        close()
                    torch.set_num_threads(threads)
                    gf = flops_tile * batch / t / 1e9
                    rows.append({"what": "network", "variant": variant, "threads": threads, "batch": batch,
                                 "ms_per_tile": 1e3 * t / batch, "s_per_mpx": t / (batch * TILE * TILE / 1e6),
                                 "gflops": gf, "ratio_bf16_matmul": gf / mm["bf16"],
                                 "compile_s": setup if variant == "bf16 compiled" else None})  # fmt: skip
    finally:
        torch.set_num_threads(saved)
    for r in rows:
        r["flops_per_tile"] = flops_tile
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`network_rows`."""
    lines = [
        "| threads | variant | batch | ms/tile | s/Mpx | GFLOP/s | / bf16 matmul |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        batch = "" if r["batch"] is None else r["batch"]
        ms = "" if r["what"] == "matmul" else f"{r['ms_per_tile']:.1f}"
        spm = "" if r["what"] == "matmul" else f"{r['s_per_mpx']:.2f}"
        note = f" (compile {r['compile_s']:.0f} s)" if r.get("compile_s") else ""
        lines.append(f"| {r['threads']} | {r['variant']}{note} | {batch} | {ms} | {spm} | {r['gflops']:.0f} "
                     f"| {r['ratio_bf16_matmul']:.2f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    """Print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batches 2 and 8, shorter timings")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (minutes of compilation)")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from gsn.models._runner import _cpu_has_native_bf16, cpu_count

    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    rows = network_rows(quick=args.quick, compile=args.compile)
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gflop = rows[0]["flops_per_tile"] / 1e9
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {cpu_count()} CPUs for this "
          f"process, native bf16: {_cpu_has_native_bf16()}; load average {load0:.1f} before, {load1:.1f} after; "
          f"{gflop:.2f} GFLOP per {TILE} px tile; {time.perf_counter() - t0:.0f} s")  # fmt: skip
    print(format_table(rows))


if __name__ == "__main__":
    main()

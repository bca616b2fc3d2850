"""CPU time per megapixel of GeneSegNet inference, for the default and the slim width.

Run: ``python benchmarks/bench_inference_speed.py [--size 1024] [--repeats 2]`` (a few minutes on a
2-core CPU). Untrained weights are used: the cost of the network does not depend on them.

For each width and tiling setting the table shows, per megapixel of *image*, the wall-clock and
process CPU seconds (CPU seconds add up the cores used) of :func:`gsn.models.predict_maps` (tiles,
forward passes, per-pixel averaging). The other steps of :func:`gsn.tl.segment` do not depend on
the network and are timed once on the same synthetic sample:

- ``inputs``: whole-image normalisation and RNA location map (``prepare_inputs``);
- ``decode``: :func:`gsn.models.decode_instances` on maps made from the true cells (an untrained
  network finds no cells, which would make decoding look free);
- ``write``: :func:`gsn.tl.write_segmentation` of those cells (labels, polygons, counts table,
  transcript column).

The paper's setting is 256 px tiles with 50 % overlap (every pixel predicted 4 times); 25 % and
0 % overlap are shown as faster options. The best of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall-clock time of ``repeats`` calls, with its CPU time and result."""
    best = (np.inf, np.inf, None)
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if w < best[0]:
            best = (w, c, out)
    return best


def main() -> None:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="side of the square test image in pixels")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU seconds are summed over threads)")
    args = p.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("gsn").setLevel(logging.WARNING)
    import torch

    import gsn
    from gsn.models import (
        DEFAULT_WIDTHS,
        SLIM_WIDTHS,
        GeneSegUNet,
        count_parameters,
        decode_instances,
        flops_per_pixel,
        make_targets,
        predict_maps,
    )
    from gsn.tl import write_segmentation
    from gsn.tl._segment import prepare_inputs

    gsn.settings.progress = False
    torch.set_num_threads(args.threads)
    size = args.size
    mpx = size * size / 1e6
    sdata = gsn.datasets.synthetic(shape=(size, size), seed=0)
    inputs = prepare_inputs(sdata, image_key="dapi", points_key="transcripts", sigma=7.0).inputs
    print(f"image {size} x {size} px ({mpx:.2f} Mpx), {torch.get_num_threads()} torch threads, batch {args.batch}, "
          f"torch {torch.__version__}")  # fmt: skip

    truth = np.asarray(sdata.labels["truth_labels"].values)
    t_inputs, _, _ = timed(
        lambda: prepare_inputs(sdata, image_key="dapi", points_key="transcripts", sigma=7.0), args.repeats
    )
    maps = make_targets(truth)
    t_decode, _, cells = timed(lambda: decode_instances(maps.mask, maps.center, maps.offsets), args.repeats)
    t_write, _, _ = timed(
        lambda: write_segmentation(
            sdata, cells, image_key="dapi", points_key="transcripts", key_added="bench", overwrite=True
        ),
        1,
    )
    print(f"per Mpx, independent of the network: inputs {t_inputs / mpx:.2f} s, decode {t_decode / mpx:.2f} s "
          f"({cells.max()} cells), write {t_write / mpx:.2f} s")  # fmt: skip

    rows = []
    for name, widths in (("default", DEFAULT_WIDTHS), ("slim", SLIM_WIDTHS)):
        torch.manual_seed(0)
        net = GeneSegUNet(2, widths)
        params, flops = count_parameters(net), flops_per_pixel(net)
        for overlap in (0.5, 0.25, 0.0):
            w, c, _ = timed(
                lambda overlap=overlap, net=net: predict_maps(
                    net, inputs, tile=256, overlap=overlap, batch_size=args.batch, device="cpu", progress=False
                ),
                args.repeats,
            )
            total = w + t_inputs + t_decode + t_write
            rows.append((name, list(widths), params, flops / 1e6, overlap, w / mpx, c / mpx, total / mpx))

    print()
    print("| width | widths | parameters | MFLOP/px (1 pass) | overlap | network wall s/Mpx | network CPU s/Mpx "
          "| segment total wall s/Mpx |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, widths, params, mflop, overlap, w, c, total in rows:
        print(f"| {name} | {widths} | {params:,} | {mflop:.2f} | {overlap:.0%} | {w:.1f} | {c:.1f} | {total:.1f} |")


if __name__ == "__main__":
    main()

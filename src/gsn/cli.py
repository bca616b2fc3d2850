"""Command-line interface: ``gsn demo`` and friends."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GeneSegNet for the scverse.")


@app.callback()
def _main() -> None:
    """GeneSegNet cell segmentation on SpatialData."""


@app.command()
def demo(
    output: Path = typer.Option(Path("gsn_demo.zarr"), "--output", "-o", help="Where to write the SpatialData zarr."),
    size: int = typer.Option(512, help="Side of the synthetic image in pixels."),
    seed: int = typer.Option(0, help="Random seed of the synthetic tissue."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Segment synthetic tissue end to end and write the result as a SpatialData zarr.

    Builds synthetic tissue with known cells, runs the watershed baseline, assigns transcripts,
    aggregates a cells x genes table, writes everything to OUTPUT and prints a summary with the
    accuracy against the known cells.
    """
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    import numpy as np

    import gsn

    if output.exists() and not overwrite:
        raise typer.BadParameter(f"{output} exists; pass --overwrite to replace it.", param_hint="--output")
    start = time.perf_counter()
    sdata = gsn.datasets.synthetic(shape=(size, size), seed=seed)
    gsn.pp.rna_location_map(sdata)
    gsn.pp.watershed(sdata)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    sdata.write(output, overwrite=overwrite)
    table = sdata["watershed_table"]
    assigned = sdata["transcripts"][["watershed_cell_id", "true_cell_id"]].compute()
    truth = sdata["truth_labels"].values
    n_true = int(np.unique(truth[truth > 0]).size)
    typer.echo(f"wrote {output} in {time.perf_counter() - start:.1f} s")
    typer.echo(f"  image {size} x {size} px, {len(assigned):,} transcripts, {table.n_vars} genes")
    typer.echo(f"  watershed baseline: {table.n_obs} cells (truth: {n_true}), median area {np.median(table.obs['area']):.0f} px")
    typer.echo(f"  transcripts inside cells: {np.mean(assigned['watershed_cell_id'] > 0):.1%} "
               f"(truth: {np.mean(assigned['true_cell_id'] > 0):.1%})")  # fmt: skip
    typer.echo(f"  elements: {', '.join(sorted(n for _, n, _ in sdata.gen_elements()))}")


if __name__ == "__main__":  # pragma: no cover
    app()

"""Command-line interface: ``gsn segment``, ``gsn train``, ``gsn compare``, ``gsn demo``.

Heavy imports happen inside the commands, so ``gsn --version`` and ``gsn --help`` stay fast.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GeneSegNet for the scverse.")

# What gsn raises for bad input (a missing element, a wrong option); the CLI prints the message.
_USER_ERRORS = (KeyError, ValueError, TypeError, FileNotFoundError)


def _version(value: bool) -> None:
    if value:
        import gsn

        typer.echo(f"gsn {gsn.__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print gsn's version and exit."
    ),
) -> None:
    """GeneSegNet cell segmentation on SpatialData."""


def _quiet_io() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


# gsn's messages name the Python arguments; on the command line the options are meant.
_OPTION_NAMES = {
    "`overwrite=True`": "--overwrite",
    "`key_added`": "--key-added",
    "`image_key=`": "--image",
    "`points_key=`": "--points",
    "`channels=`": "--channels",
}


def _message(error: Exception) -> str:
    # str(KeyError) wraps the message in quotes
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    for python, option in _OPTION_NAMES.items():
        text = text.replace(python, option)
    return text


def _read_store(path: Path):
    """Open a SpatialData zarr store, with a clear error when it is missing or not one."""
    import spatialdata as sd

    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist.", param_hint="PATH")
    if not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a SpatialData .zarr folder.", param_hint="PATH")
    try:
        return sd.read_zarr(path)
    except Exception as error:  # zarr/spatialdata raise many kinds for a folder that is not a store
        raise typer.BadParameter(
            f"{path} could not be read as a SpatialData zarr store ({type(error).__name__}: {error}).",
            param_hint="PATH",
        ) from error


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@app.command()
def segment(
    path: Path = typer.Argument(..., help="SpatialData .zarr store; the results are written into it."),
    image: str | None = typer.Option(None, "--image", help="Image element (default: the only one, or sopa's)."),
    points: str | None = typer.Option(None, "--points", help="Transcripts (default: the only points, or sopa's)."),
    model: str = typer.Option("default", "--model", help="'default' (ships with gsn) or a file from `gsn train`."),
    key_added: str = typer.Option("genesegnet", "--key-added", help="Prefix of the elements written."),
    channels: str | None = typer.Option(None, "--channels", help="Comma-separated image channels for the network."),
    grow: bool = typer.Option(True, "--grow/--no-grow", help="Grow the decoded cells with the transcripts."),
    max_distance: float = typer.Option(8.0, help="With --grow: how far (µm) a cell may reach beyond its core."),
    missed_nuclei: bool = typer.Option(
        True, "--missed-nuclei/--no-missed-nuclei", help="Also start cells from the stain's nuclei the network missed."
    ),
    device: str = typer.Option("auto", help="Torch device: auto, cpu, cuda, mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing elements with the same names."),
) -> None:
    """Segment cells with GeneSegNet and write labels, boundaries and table into the store at PATH."""
    _quiet_io()
    if model != "default" and not Path(model).is_file():
        raise typer.BadParameter(f"{model} is not a model file (or 'default').", param_hint="--model")
    import gsn

    sdata = _read_store(path)
    start = time.perf_counter()
    try:
        gsn.tl.segment(
            sdata, model, image_key=image, points_key=points, key_added=key_added, channels=_split(channels),
            grow=grow, max_distance=max_distance, missed_nuclei=missed_nuclei, device=device, overwrite=overwrite,
        )  # fmt: skip
    except _USER_ERRORS as error:
        raise _fail(_message(error)) from error
    table = sdata[gsn.Key.table(key_added)]
    names = (gsn.Key.labels(key_added), gsn.Key.boundaries(key_added), gsn.Key.table(key_added))
    written = [n for n in names if n in sdata]
    typer.echo(f"{table.n_obs} cells in {time.perf_counter() - start:.1f} s; wrote {', '.join(written)} into {path}")


@app.command()
def train(
    path: Path = typer.Argument(..., help="SpatialData .zarr store with the image, transcripts and labels."),
    labels: str = typer.Option(..., "--labels", help="Labels element to train on (e.g. a nucleus prior)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model file to write (read by `gsn segment --model`)."),
    image: str | None = typer.Option(None, "--image", help="Image element (default: the only one)."),
    points: str | None = typer.Option(None, "--points", help="Transcripts (default: the only points element)."),
    epochs: int = typer.Option(10, help="Epochs per round."),
    steps_per_epoch: int = typer.Option(25, help="Batches per epoch."),
    batch_size: int = typer.Option(8, help="Crops per batch."),
    crop_size: int = typer.Option(256, help="Side of the training crops in pixels."),
    max_rounds: int = typer.Option(1, help="Rounds of recursive label refinement (1: train once)."),
    widths: str = typer.Option("auto", help="U-Net widths, e.g. 16,32,64,128, or 'auto'."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="Torch device: auto, cpu, cuda, mps."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model file."),
) -> None:
    """Train a GeneSegNet model on labels of the store at PATH and save it to OUTPUT."""
    _quiet_io()
    if output.exists() and not overwrite:
        raise typer.BadParameter(f"{output} exists; pass --overwrite to replace it.", param_hint="--output")
    try:
        width_list = "auto" if widths == "auto" else [int(w) for w in _split(widths) or []]
    except ValueError as error:
        message = f"{widths!r} is not 'auto' or comma-separated integers."
        raise typer.BadParameter(message, param_hint="--widths") from error
    import gsn

    sdata = _read_store(path)
    start = time.perf_counter()
    try:
        model = gsn.tl.train(
            sdata, labels_key=labels, image_key=image, points_key=points, epochs=epochs,
            steps_per_epoch=steps_per_epoch, batch_size=batch_size, crop_size=crop_size, max_rounds=max_rounds,
            widths=width_list, seed=seed, device=device,
        )  # fmt: skip
    except _USER_ERRORS as error:
        raise _fail(_message(error)) from error
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    last = model.history[-1] if model.history else {}
    loss = f", final loss {last['loss']:.4f}" if "loss" in last else ""
    typer.echo(f"trained {len(model.history)} epochs in {time.perf_counter() - start:.1f} s{loss}; wrote {output}")


# Headline rows of `gsn compare` (metric, stat); `--all` prints every row.
_SUMMARY = [
    ("n_cells", "value"),
    ("transcripts_in_cells", "fraction"),
    ("pixels_in_cells", "fraction"),
    ("cell_calling", "ratio"),
    ("area", "median"),
    ("elongation", "median"),
    ("convexity", "median"),
    ("n_genes", "median"),
    ("n_transcripts", "median"),
]


@app.command()
def compare(
    path: Path = typer.Argument(..., help="SpatialData .zarr store with the segmentations."),
    keys: str = typer.Option(..., "--keys", help="Comma-separated segmentation prefixes, e.g. genesegnet,prior."),
    image: str | None = typer.Option(None, "--image", help="Image element (default: the only one)."),
    points: str | None = typer.Option(None, "--points", help="Transcripts (default: the only points element)."),
    truth: str | None = typer.Option(None, "--truth", help="Labels element with true cells (adds F1 and friends)."),
    all_rows: bool = typer.Option(False, "--all", help="Print the whole tidy table instead of the summary."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also write the tidy table as CSV."),
) -> None:
    """Print the segmentation metrics of several segmentations of the store at PATH, side by side."""
    _quiet_io()
    import pandas as pd

    import gsn

    names = _split(keys)
    if not names:
        raise typer.BadParameter("give at least one segmentation prefix.", param_hint="--keys")
    sdata = _read_store(path)
    try:
        table = gsn.tl.compare(sdata, names, image_key=image, points_key=points, truth_key=truth)
    except _USER_ERRORS as error:
        raise _fail(_message(error)) from error
    if output is not None:
        table.to_csv(output, index=False)
    if all_rows:
        shown = table
    else:
        wanted = _SUMMARY + [(m, "value") for m in ("precision", "recall", "f1")]
        parts = []
        for metric, stat in wanted:
            rows = table[(table["metric"] == metric) & (table["stat"] == stat)]
            labels = [f"{metric} {stat}" + ("" if pd.isna(v) else f" @ {v:g}") for v in rows["level"]]
            parts.append(rows.assign(row=labels))
        rows = pd.concat(parts)
        shown = rows.pivot(index="row", columns="key", values="value")
        shown = shown.reindex(index=rows["row"].unique(), columns=names)
        shown.index.name = None
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.float_format", "{:.4g}".format):
        typer.echo(shown.to_string())


@app.command()
def demo(
    output: Path = typer.Option(Path("gsn_demo.zarr"), "--output", "-o", help="Where to write the SpatialData zarr."),
    size: int = typer.Option(512, help="Side of the synthetic image in pixels."),
    seed: int = typer.Option(0, help="Random seed of the synthetic tissue."),
    overwrite: bool = typer.Option(False, help="Replace an existing output folder."),
) -> None:
    """Segment synthetic tissue end to end and write the result as a SpatialData zarr.

    Builds synthetic tissue with known cells, segments it with GeneSegNet (the default model that
    ships with gsn) and with the watershed baseline, assigns transcripts, aggregates cells x genes
    tables, writes everything to OUTPUT and prints a summary with the accuracy against the known cells.
    """
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("ome_zarr").setLevel(logging.ERROR)
    import numpy as np

    import gsn

    if output.exists() and not overwrite:
        raise typer.BadParameter(f"{output} exists; pass --overwrite to replace it.", param_hint="--output")
    start = time.perf_counter()
    sdata = gsn.datasets.synthetic(shape=(size, size), seed=seed)
    gsn.settings.progress = False
    gsn.tl.segment(sdata)  # GeneSegNet with the default model
    gsn.pp.watershed(sdata)
    gsn.tl.cells_from_labels(sdata, "watershed_labels")
    sdata.write(output, overwrite=overwrite)
    truth = sdata["truth_labels"].values
    n_true = int(np.unique(truth[truth > 0]).size)
    n_tx = len(sdata["transcripts"])
    typer.echo(f"wrote {output} in {time.perf_counter() - start:.1f} s")
    typer.echo(f"  image {size} x {size} px, {n_tx:,} transcripts, {sdata['genesegnet_table'].n_vars} genes, "
               f"{n_true} true cells")  # fmt: skip
    typer.echo(f"  {'':<12} {'cells':>6} {'median area':>12} {'F1@IoU0.5':>10} {'transcripts in true cell':>25}")
    for key in ("genesegnet", "watershed"):
        table = sdata[f"{key}_table"]
        acc = gsn.tl.match_truth(sdata, key, "truth_labels", thresholds=(0.5,)).iloc[0]
        area = np.median(table.obs["area"]) if table.n_obs else float("nan")
        f1, tx = acc["f1"], acc["transcript_accuracy"]
        typer.echo(f"  {key:<12} {table.n_obs:>6} {area:>9.0f} px {f1:>10.3f} {tx:>25.1%}")
    typer.echo("  The image shows nuclei only and the truth is whole cells: the watershed baseline outlines the")
    typer.echo("  nuclei, so its cells rarely reach IoU 0.5 with the true cells (F1 near 0 by design); GeneSegNet")
    typer.echo("  grows its cells with the transcripts into whole cells.")
    typer.echo(f"  elements: {', '.join(sorted(n for _, n, _ in sdata.gen_elements()))}")


if __name__ == "__main__":  # pragma: no cover
    app()

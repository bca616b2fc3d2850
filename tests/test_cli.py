import spatialdata as sd
from typer.testing import CliRunner

from gsn.cli import app


def test_demo_writes_zarr_and_summary(tmp_path):
    out = tmp_path / "demo.zarr"
    result = CliRunner().invoke(app, ["demo", "--output", str(out), "--size", "256"])
    assert result.exit_code == 0, result.output
    assert "watershed baseline:" in result.output and "cells (truth:" in result.output
    back = sd.read_zarr(out)
    assert {"watershed_labels", "watershed_boundaries", "watershed_table"} <= {n for _, n, _ in back.gen_elements()}
    assert back["watershed_table"].n_obs > 0
    again = CliRunner().invoke(app, ["demo", "--output", str(out), "--size", "256"])
    assert again.exit_code != 0 and "exists" in again.output

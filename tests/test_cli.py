import spatialdata as sd
from typer.testing import CliRunner

from gsn.cli import app


def test_demo_writes_zarr_and_summary(tmp_path):
    out = tmp_path / "demo.zarr"
    result = CliRunner().invoke(app, ["demo", "--output", str(out), "--size", "256"])
    assert result.exit_code == 0, result.output
    assert "genesegnet" in result.output and "watershed" in result.output and "true cells" in result.output
    back = sd.read_zarr(out)
    names = {n for _, n, _ in back.gen_elements()}
    assert {"genesegnet_labels", "genesegnet_boundaries", "genesegnet_table", "watershed_table"} <= names
    assert back["genesegnet_table"].n_obs > 0
    assert back["genesegnet_table"].uns["genesegnet"]["model"]["name"] == "default"
    again = CliRunner().invoke(app, ["demo", "--output", str(out), "--size", "256"])
    assert again.exit_code != 0 and "exists" in again.output

"""The `vlmdrive scenario` commands: exit codes, no tracebacks, schema kept in sync."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from vlmdrive.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "scenarios/library/train/construction_right_rain_night.yaml"
runner = CliRunner()


def test_validate_good_file_exits_0() -> None:
    result = runner.invoke(app, ["scenario", "validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "1 scenario(s) valid" in result.output


def test_validate_bad_file_exits_1_with_located_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ok\nweather:\n  preset: Sunny\nevents:\n  - type: meteor\n    at_m: 3\n")
    result = runner.invoke(app, ["scenario", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:3: weather.preset: unknown weather preset 'Sunny'" in result.output
    assert f"{bad}:5:5: events[0]:" in result.output and "construction_zone" in result.output
    assert "Traceback" not in result.output


def test_validate_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nroute: [unclosed\n")
    result = runner.invoke(app, ["scenario", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:3:" in result.output or f"{bad}:2:" in result.output
    assert "invalid YAML" in result.output


def test_sample_prints_n_concrete_instances() -> None:
    result = runner.invoke(app, ["scenario", "sample", str(EXAMPLE), "-n", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.count("---") == 3
    assert "uniform" not in result.output  # every distribution was drawn


def test_schema_matches_the_shipped_schema_file() -> None:
    result = runner.invoke(app, ["scenario", "schema"])
    assert result.exit_code == 0
    shipped = json.loads((ROOT / "scenarios/scenario.schema.json").read_text())
    assert json.loads(result.output) == shipped, (
        "scenarios/scenario.schema.json is stale: regenerate with "
        "`vlmdrive scenario schema > scenarios/scenario.schema.json`"
    )


def test_preview_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    result = runner.invoke(app, ["scenario", "preview", str(EXAMPLE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

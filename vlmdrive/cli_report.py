"""`vlmdrive report RESULTS --out DIR`: the HTML report of an evaluation.

`register(app)` adds the command to the main typer app (vlmdrive/cli.py wires it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

_out = Console()
_err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def report(
    results: Annotated[
        Path,
        typer.Argument(help="Leaderboard results JSON (its .details.json is used if present)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: <results stem>_report next to it)."),
    ] = None,
) -> None:
    """Write an HTML report (index.html + plots) of an evaluation's results JSON."""
    from sim.report.html import write_report
    from sim.report.results import ResultsFormatError

    if not results.exists():
        _fail(f"results file {results} does not exist")
    if not results.is_file():
        _fail(f"{results} is not a file (expected a Leaderboard results JSON)")
    out_dir = out if out is not None else results.with_name(f"{results.stem}_report")
    try:
        index = write_report(results, out_dir)
    except ResultsFormatError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the report to {out_dir}: {exc}")
    _out.print(str(index), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `report` command to `app`."""
    app.command("report")(report)

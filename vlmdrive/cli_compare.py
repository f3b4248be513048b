"""`vlmdrive compare BASELINE CANDIDATE`: two agents' evaluations, route by route.

`register(app)` adds the command to the main typer app (vlmdrive/cli.py wires it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

_out = Console()
_err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    _err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def compare(
    baseline: Annotated[
        list[Path],
        typer.Argument(help="Baseline results JSON file(s) or folder(s) holding them."),
    ],
    candidate: Annotated[
        list[Path],
        typer.Option(
            "--against",
            "-a",
            help="Candidate results JSON file(s) or folder(s); repeat for several.",
        ),
    ],
    top: Annotated[int, typer.Option("--top", help="Routes to list with the largest change.")] = 8,
    by_scenario: Annotated[
        bool,
        typer.Option(
            "--by-scenario", help="Also list each scenario's mean scores, largest loss first."
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison as JSON here.")
    ] = None,
) -> None:
    """Paired per-route comparison of two agents evaluated on the same suite and seeds:
    mean Driving Score difference, its standard error and bootstrap 95 % interval, routes
    better / worse, infractions and guard interventions of each side."""
    from sim.report.compare import CompareError
    from sim.report.compare import compare as run_compare
    from sim.report.results import ResultsFormatError

    if top < 0:
        _fail(f"--top must be >= 0, got {top}")
    try:
        result = run_compare(baseline, candidate)
    except (CompareError, ResultsFormatError) as exc:
        _fail(str(exc))

    b, c = result.baseline, result.candidate
    table = Table(title=f"{len(result.pairs)} routes, seeds {list(b.seeds)}", title_justify="left")
    table.add_column("")
    table.add_column("baseline", justify="right")
    table.add_column("candidate", justify="right")
    table.add_row("Driving Score", f"{b.driving_score:.2f}", f"{c.driving_score:.2f}")
    table.add_row("Route Completion", f"{b.route_completion:.2f}", f"{c.route_completion:.2f}")
    table.add_row(
        "Infraction Penalty", f"{b.infraction_penalty:.3f}", f"{c.infraction_penalty:.3f}"
    )
    for kind in sorted(set(b.infractions) | set(c.infractions)):
        table.add_row(f"  {kind}", str(b.infractions.get(kind, 0)), str(c.infractions.get(kind, 0)))
    if b.guard_share is not None or c.guard_share is not None:
        table.add_row(
            "guard interventions (share of ticks)",
            "-" if b.guard_share is None else f"{b.guard_share:.3f}",
            "-" if c.guard_share is None else f"{c.guard_share:.3f}",
        )
    _out.print(table)
    low, high = result.interval95
    _out.print(
        f"paired DS difference (candidate - baseline): {result.mean_difference:+.2f} "
        f"+- {result.standard_error:.2f} SE, bootstrap 95 % [{low:+.2f}, {high:+.2f}]; "
        f"better on {result.better} routes, worse on {result.worse}, same on {result.same}",
        highlight=False,
        soft_wrap=True,
    )
    if top:
        changes = Table(title="largest changes", title_justify="left")
        changes.add_column("seed", justify="right")
        changes.add_column("route", no_wrap=True)
        changes.add_column("scenario", overflow="fold")
        for name in ("base", "cand", "diff"):
            changes.add_column(name, justify="right")
        for p in result.largest_changes(top):
            changes.add_row(
                str(p.seed),
                p.route_id,
                p.scenario,
                f"{p.baseline.score_composed:.1f}",
                f"{p.candidate.score_composed:.1f}",
                f"{p.difference:+.1f}",
            )
        _out.print(changes)
    if by_scenario:
        scenarios = Table(title="by scenario (mean over seeds)", title_justify="left")
        scenarios.add_column("scenario", overflow="fold")
        scenarios.add_column("routes", justify="right")
        for name in ("base", "cand", "diff"):
            scenarios.add_column(name, justify="right")
        for s in result.by_scenario():
            scenarios.add_row(
                s.scenario,
                str(s.routes),
                f"{s.baseline:.1f}",
                f"{s.candidate:.1f}",
                f"{s.difference:+.1f}",
            )
        _out.print(scenarios)
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            tmp = json_out.with_name(json_out.name + ".tmp")
            tmp.write_text(json.dumps(result.to_json(), indent=2))
            tmp.replace(json_out)  # never a half-written file
        except OSError as exc:
            _fail(f"cannot write {json_out}: {exc}")


def register(app: typer.Typer) -> None:
    """Add the `compare` command to `app`."""
    app.command("compare")(compare)

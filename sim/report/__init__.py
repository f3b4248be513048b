"""Evaluation report: per-route videos (`recorder`) and the HTML report (`html`).

Public API (imported lazily, so that `sim.report.recorder` does not pull in matplotlib):
`RouteRecorder`, `write_report`, `load_results`, `EvaluationResults`, `ResultsFormatError`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sim.report.html import write_report
    from sim.report.recorder import RouteRecorder
    from sim.report.results import EvaluationResults, ResultsFormatError, load_results

_EXPORTS = {
    "RouteRecorder": "sim.report.recorder",
    "write_report": "sim.report.html",
    "load_results": "sim.report.results",
    "EvaluationResults": "sim.report.results",
    "ResultsFormatError": "sim.report.results",
}
__all__ = [
    "EvaluationResults",
    "ResultsFormatError",
    "RouteRecorder",
    "load_results",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sim.report' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

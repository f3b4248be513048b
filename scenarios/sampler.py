"""Turn a scenario with distributions into concrete scenarios, deterministically.

Variation `i` of a file draws from `numpy.random.default_rng([seed, i])`, walking the
fields in declaration order, so the same file, seed and index always give the same
scenario. A concrete scenario is validated again (ranges apply to the drawn values);
a draw outside a field's range is a ScenarioError naming the variation and the field.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from scenarios.loader import Problem, ScenarioError
from scenarios.schema import Choice, Normal, Scenario, Uniform


def _is_int_field(model: type[BaseModel], name: str) -> bool:
    annotation = model.model_fields[name].annotation
    args = (
        typing.get_args(annotation)
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
        else (annotation,)
    )
    return int in args and float not in args


def _draw(dist: Any, rng: np.random.Generator, as_int: bool) -> Any:
    if isinstance(dist, Uniform):
        low, high = dist.uniform
        value: Any = float(rng.uniform(low, high))
        return int(round(value)) if as_int else value
    if isinstance(dist, Normal):
        p = dist.normal
        value = float(rng.normal(p.mean, p.std))
        if p.min is not None:
            value = max(value, p.min)
        if p.max is not None:
            value = min(value, p.max)
        return int(round(value)) if as_int else value
    if isinstance(dist, Choice):
        return dist.choice[int(rng.integers(len(dist.choice)))]
    return dist


def _concrete(value: Any, rng: np.random.Generator, as_int: bool = False) -> Any:
    if isinstance(value, Uniform | Normal | Choice):
        return _concrete(_draw(value, rng, as_int), rng)
    if isinstance(value, BaseModel):
        out = {}
        for name in type(value).model_fields:
            if name in value.model_fields_set or name in ("type",):
                out[name] = _concrete(getattr(value, name), rng, _is_int_field(type(value), name))
        return out
    if isinstance(value, list | tuple):
        return [_concrete(v, rng) for v in value]
    return value


def is_concrete(value: Any) -> bool:
    if isinstance(value, Uniform | Normal | Choice):
        return False
    if isinstance(value, BaseModel):
        return all(is_concrete(getattr(value, n)) for n in type(value).model_fields)
    if isinstance(value, list | tuple):
        return all(is_concrete(v) for v in value)
    return True


def sample(
    scenario: Scenario, n: int | None = None, file: str | Path = "<scenario>"
) -> list[Scenario]:
    """The scenario's `variations` (or `n`) concrete instances, named `<name>#<i>`."""
    count = scenario.variations if n is None else n
    out = []
    for i in range(count):
        rng = np.random.default_rng([scenario.seed, i])
        data = _concrete(scenario, rng)
        data["name"] = f"{scenario.name}#{i}" if count > 1 or n is not None else scenario.name
        data["variations"] = 1
        try:
            out.append(Scenario.model_validate(data))
        except ValidationError as exc:
            problems = [
                Problem(
                    str(file),
                    1,
                    1,
                    ".".join(str(p) for p in err["loc"]),
                    f"variation {i}: {err['msg']}",
                )
                for err in exc.errors()
            ]
            raise ScenarioError(problems) from None
    return out

"""Simulators behind one protocol, the Gymnasium env, the evaluation harness and scoring.

`sim.make_env(...)` is `sim.env.make_env`, imported on first use (importing `sim.env`
registers the Gymnasium ids `vlmdrive/...`).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "make_env":
        from sim.env import make_env

        return make_env
    raise AttributeError(f"module 'sim' has no attribute {name!r}")

"""Multi-seed sweeps over ``lit_align fit`` settings, with per-setting means and confidence intervals.

`scripts/sweep.py` is the command; `run_sweep` is the same thing for a script that builds its own grid
(`scripts/compare.py`)."""

from lit_align.sweeps.collect import Metric, parse_metrics
from lit_align.sweeps.grid import Axis, AxisValue, Setting, SweepError, config_axis, parse_grid, parse_set
from lit_align.sweeps.plan import parse_seeds
from lit_align.sweeps.sweep import SweepSpec, run_sweep

__all__ = [
    "Axis",
    "AxisValue",
    "Metric",
    "Setting",
    "SweepError",
    "SweepSpec",
    "config_axis",
    "parse_grid",
    "parse_metrics",
    "parse_seeds",
    "parse_set",
    "run_sweep",
]

"""One sweep from start to end: plan the runs, run those not finished, then collect, tabulate and plot all of them.

`scripts/sweep.py` (a grid given on the command line) and `scripts/compare.py` (the quickstart recipes as the
grid) both build a `SweepSpec` and call `run_sweep`. The output folder is chosen from the name, not numbered, so
that calling the same command again finds the runs it made: that is how a sweep resumes after a crash and how
seeds or grid values are added later.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lit_align.sweeps.collect import Metric, collect
from lit_align.sweeps.grid import Axis, SweepError, config_axis, name_axes, safe_slug, settings
from lit_align.sweeps.manifest import check_manifest, write_manifest
from lit_align.sweeps.plan import (
    PlannedRun,
    axes_record,
    config_path,
    fit_command,
    length_text,
    overrides,
    plan_runs,
    run_configs,
    run_length,
)
from lit_align.sweeps.plots import plot_curves, plot_final
from lit_align.sweeps.report import write_runs_csv, write_summary_csv, write_summary_md
from lit_align.sweeps.runner import action_for, execute, move_aside, run_status

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SweepSpec:
    """What to run: base recipes (``--config``), grid axes, seeds and fixed ``--set`` overrides; where (``output``,
    else ``logs/sweeps/<name>``, name by default the first recipe's stem); how many at a time; what to report."""

    configs: list[str]
    axes: list[Axis]
    seeds: list[int]
    metrics: list[Metric]
    sets: list[tuple[str, str]] = field(default_factory=list)
    output: Path | None = None
    name: str | None = None
    jobs: int = 1
    dry_run: bool = False
    command: list[str] = field(default_factory=list)
    title: str = "Sweep"
    notes: list[str] = field(default_factory=list)
    """Lines for the head of summary.md (what a reader must know to read the table)."""
    root: Path = ROOT


def _normalised(spec: SweepSpec) -> tuple[list[str], list[Axis]]:
    """Recipe paths as the runs see them (relative to the repository root), checked to exist."""
    configs = [config_path(path, spec.root) for path in spec.configs]
    axes = []
    for axis in spec.axes:
        if axis.is_config:
            paths = [config_path(value.text, spec.root, "--grid config") for value in axis.values]
            labels = {p: v.label for p, v in zip(paths, axis.values, strict=True) if v.custom_label}
            axis = config_axis(paths, labels)
        axes.append(axis)
    axes = name_axes(axes)
    if not configs and not any(axis.is_config for axis in axes):
        raise SweepError("no recipe: give --config <recipe.yaml>, or make the recipe an axis with --grid config=[...]")
    clash = {key for key, _ in spec.sets} & {axis.key for axis in axes}
    if clash:
        raise SweepError(f"{', '.join(sorted(clash))} is both in --set and in --grid: keep it in one of them")
    if spec.jobs < 1:
        raise SweepError(f"--jobs {spec.jobs}: at least 1 run at a time")
    return configs, axes


def output_folder(spec: SweepSpec, configs: list[str], axes: list[Axis]) -> Path:
    """``--output``, else ``<root>/logs/sweeps/<name>``: the name given, or the first recipe's file stem."""
    if spec.output is not None:
        return spec.output.expanduser().resolve()
    first = configs[0] if configs else next(axis for axis in axes if axis.is_config).values[0].text
    return spec.root / "logs" / "sweeps" / safe_slug(spec.name or Path(first).stem)


def _steps(run: PlannedRun, spec: SweepSpec, configs: list[str]) -> tuple[int | None, int | None]:
    return run_length(run_configs(configs, run.setting), overrides(spec.sets, run.setting), spec.root)


def describe_plan(
    runs: list[PlannedRun], actions: dict[str, str], lengths: dict[str, tuple[int | None, int | None]], output: Path
) -> list[str]:
    """The dry-run listing: one line per run, then what is left to do."""
    rows = [("setting", "seed", "action", "steps", "run dir")]
    rows += [(r.setting.label, str(r.seed), actions[r.name], length_text(*lengths[r.name]),
              r.run_dir.relative_to(output).as_posix()) for r in runs]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    todo = [r for r in runs if actions[r.name] != "skip"]
    steps = sum(lengths[r.name][0] or 0 for r in todo)
    by_epochs = [r for r in todo if lengths[r.name][0] is None]
    total = f"{steps} optimizer steps"
    if by_epochs:
        limits = sorted({length_text(*lengths[r.name]) for r in by_epochs})
        total += f" + {len(by_epochs)} run(s) without trainer.max_steps ({', '.join(limits)})"
    skipped = len(runs) - len(todo)
    lines.append(f"to do: {len(todo)} of {len(runs)} runs ({skipped} finished, skipped); {total}")
    return lines


def run_sweep(spec: SweepSpec, say: Callable[[str], None] = print) -> int:
    """Plan, run, collect and report; the exit code: 0, or 1 when any run of the plan is not finished."""
    configs, axes = _normalised(spec)
    output = output_folder(spec, configs, axes)
    check_manifest(output, configs, spec.sets)
    the_settings = settings(axes)
    runs = plan_runs(the_settings, spec.seeds, output)
    statuses = {run.name: run_status(run.run_dir) for run in runs}
    actions = {name: action_for(status) for name, status in statuses.items()}
    lengths = {run.name: _steps(run, spec, configs) for run in runs}
    say(f"{spec.title}: {len(the_settings)} setting(s) × {len(spec.seeds)} seed(s) = {len(runs)} runs in {output}")
    if spec.dry_run:
        for line in describe_plan(runs, actions, lengths, output):
            say(line)
        return 0

    write_manifest(
        output, spec.command, configs, spec.sets, axes_record(axes), spec.seeds, [m.spec for m in spec.metrics]
    )
    jobs = []
    for run in runs:
        if actions[run.name] == "rerun":
            say(f"{run.name}: {statuses[run.name]}, moved aside to {move_aside(run.run_dir).name}")
        if actions[run.name] != "skip":
            jobs.append((run.name, fit_command(run, configs, spec.sets), run.run_dir))
    skipped = len(runs) - len(jobs)
    say(f"running {len(jobs)} run(s), {spec.jobs} at a time" + (f"; {skipped} finished already" if skipped else ""))
    execute(jobs, spec.root, spec.jobs, say=say)

    results, warnings = collect(runs, spec.metrics)
    for warning in warnings:
        say(warning)
    steps = sorted({length_text(*lengths[run.name]) for run in runs})
    header = [
        f"- Command: `{shlex.join(spec.command)}`" if spec.command else "",
        f"- Seeds: {', '.join(map(str, spec.seeds))}. Optimizer steps per run: {', '.join(steps)}.",
        f"- Base recipes: {', '.join(configs) or '(the config axis)'}."
        + (f" Fixed overrides: {', '.join(f'{k}={v}' for k, v in spec.sets)}." if spec.sets else ""),
        *(f"- {note}" for note in spec.notes),
    ]
    written = [
        write_runs_csv(output / "sweep.csv", output, axes, spec.metrics, results),
        write_summary_csv(output / "summary.csv", axes, the_settings, spec.metrics, results),
        write_summary_md(output / "summary.md", f"{spec.title}: {output.name}", [h for h in header if h],
                         the_settings, spec.metrics, results),
        plot_curves(output / "curves.png", the_settings, spec.metrics, results),
        plot_final(output / "final.png", the_settings, spec.metrics, results),
    ]  # fmt: skip
    say((output / "summary.md").read_text(encoding="utf-8"))
    say("wrote " + ", ".join(str(path) for path in written))
    not_finished = [r for r in results if not r.finished]
    if not_finished:
        say(
            f"{len(not_finished)} run(s) not finished: " + ", ".join(f"{r.run.name} ({r.status})" for r in not_finished)
        )
    return 1 if not_finished else 0

"""``lit_align eval``: score a model, an adapter or a run's checkpoint on lm-eval tasks, offline if need be.

The same YAML style as ``lit_align fit``: the top-level keys are `HarnessSettings`' fields (lm-eval's own option
names), ``model:`` is an `EvalModel`, and ``output_dir`` / ``dry_run`` / ``overwrite`` say where to write and
whether to run at all. ``--config``, ``--print_config`` and dotted overrides (``--model.path``) work as in ``fit``.

The model is loaded once and handed to lm-eval in memory. What is written, in ``output_dir`` (default: the
run's ``eval/<time>/`` for a lit_align run, else ``logs/eval/<model name>/<time>/``): ``results.json``
(lm-eval's result plus a manifest of what was evaluated), ``results.csv`` (one row per task, metric and filter)
and ``samples_<task>.jsonl`` with ``log_samples``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lit_align.evaluation.harness import HarnessSettings
from lit_align.evaluation.model import EvalModel

DEFAULT_TASKS = ["cmmlu", "ceval-valid", "hellaswag", "winogrande"]
"""Chinese subjects (cmmlu, ceval-valid), commonsense (hellaswag) and English reasoning (winogrande)."""

_OWN_KEYS = ("output_dir", "dry_run", "overwrite")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="lit_align eval",
        description="Evaluate a model, adapter or lit_align run on lm-evaluation-harness tasks.",
        default_env=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="An evaluation YAML (configs/eval/*.yaml).")
    parser.add_class_arguments(EvalModel, "model", help="What to evaluate and where it runs.")
    parser.add_class_arguments(HarnessSettings, None)
    parser.set_defaults(tasks=DEFAULT_TASKS)
    parser.add_argument("--output_dir", type=str | None, default=None, help="Where to write the results.")
    parser.add_argument("--dry_run", type=bool, default=False, help="Print the plan and the first prompts only.")
    parser.add_argument("--overwrite", type=bool, default=False, help="Write into an output_dir that has files.")
    return parser


def main(args: list[str] | None = None) -> None:
    parser = build_parser()
    config = parser.parse_args(args)
    resolved = json.loads(parser.dump(config, format="json"))  # what --print_config shows: the whole config
    try:
        model = EvalModel(**_plain(config.model))
        fields = {f.name for f in dataclasses.fields(HarnessSettings)}
        settings = HarnessSettings(**{k: _plain(v) for k, v in vars(config).items() if k in fields})
    except ValueError as error:
        _fail(error, code=2)
    output_dir = _output_dir(model, config.output_dir)
    try:
        if config.dry_run:
            _dry_run(model, settings, output_dir)
        else:
            evaluate(model, settings, output_dir, resolved, overwrite=config.overwrite)
    except (ValueError, OSError, ConnectionError) as error:  # FileNotFoundError, FileExistsError: OSErrors
        if os.environ.get("LIT_ALIGN_TRACEBACK"):
            raise
        sys.stderr.write(f"error: {error}\n(LIT_ALIGN_TRACEBACK=1 shows where it was raised)\n")
        sys.exit(1)


def evaluate(model: EvalModel, settings: HarnessSettings, output_dir: Path, resolved: Any, overwrite=False) -> Path:
    """Load, run lm-eval, write the result files and print the table; returns the folder written."""
    from lit_align.evaluation.harness import run_harness
    from lit_align.evaluation.model import load_for_eval
    from lit_align.evaluation.results import results_table, write_results

    if output_dir.is_file() or (output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite):
        raise FileExistsError(f"output_dir {output_dir} already holds files: choose another, or set --overwrite true")
    started = time.time()
    trained = load_for_eval(model)
    results = run_harness(trained.model, trained.tokenizer, settings)
    manifest = _manifest(model, trained.global_step, resolved, time.time() - started)
    written = write_results(output_dir, results, manifest)
    print(results_table(results))
    print(f"\nwrote {', '.join(p.name for p in written)} to {output_dir} ({manifest['seconds']:.0f} s)")
    return output_dir


def _dry_run(model: EvalModel, settings: HarnessSettings, output_dir: Path) -> None:
    from lit_align.evaluation.plan import plan_text, task_previews
    from lit_align.evaluation.tokenizer import tokenizer_of

    print(plan_text(model, settings, task_previews(settings, tokenizer_of(model)), output_dir))


def _output_dir(model: EvalModel, output_dir: str | None) -> Path:
    if output_dir is not None:
        return Path(output_dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run = model.run_directory()
    default = (run / "eval" / stamp) if run is not None else Path("logs") / "eval" / model.display_name / stamp
    taken = 0
    while default.with_name(f"{stamp}-{taken}" if taken else stamp).exists():  # two evaluations in one second
        taken += 1
    return default.with_name(f"{stamp}-{taken}" if taken else stamp)


def _manifest(model: EvalModel, global_step: int | None, resolved: Any, seconds: float) -> dict[str, Any]:
    from importlib.metadata import version

    import lit_align

    return {
        "name": model.display_name,
        "model": dataclasses.asdict(model),
        "global_step": global_step,
        "versions": {
            "lit_align": lit_align.__version__,
            **{package: version(package) for package in ("lm_eval", "transformers", "torch", "peft")},
        },
        "config": resolved,
        "finished": datetime.now().isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
    }


def _plain(value: Any) -> Any:
    """jsonargparse's ``Namespace`` (and lists of them) as plain dicts and lists."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    return value


def _fail(error: BaseException, code: int) -> None:
    sys.stderr.write(f"error: {error}\n")
    sys.exit(code)

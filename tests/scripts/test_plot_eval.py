"""scripts/plot_eval.py: a PNG per metric against step for runs, a grouped bar chart for finished models."""

import importlib.util

import pytest

from lit_align.evaluation.results import write_results

from ..conftest import ROOT

spec = importlib.util.spec_from_file_location("plot_eval", ROOT / "scripts" / "plot_eval.py")
plot_eval = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plot_eval)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _results(acc: float, exact: float | None = None) -> dict:
    """The part of lm-eval's result dictionary the plots read: a multiple-choice task and, optionally, a
    generative one whose score carries a filter name."""
    results = {"demo_choice": {"alias": "demo_choice", "acc,none": acc, "acc_stderr,none": 0.05}}
    counts = {"demo_choice": {"original": 200, "effective": 50}}
    if exact is not None:
        results["gsm8k_local"] = {
            "exact_match,strict-match": exact,
            "exact_match_stderr,strict-match": "N/A",
        }
        counts["gsm8k_local"] = {"original": 100, "effective": 20}
    return {"results": results, "n-samples": counts}


def _write_run(run, scores):
    for step, (acc, exact) in scores.items():
        write_results(run / "lm_eval" / f"step_{step}", _results(acc, exact), {"global_step": step})


def test_series_are_the_scores_written_per_step(tmp_path):
    run = tmp_path / "exp" / "version_0"
    _write_run(run, {10: (0.5, 0.1), 2: (0.25, None), 20: (0.75, 0.3)})
    by_step = plot_eval.step_results(run)
    assert list(by_step) == [2, 10, 20]

    series = plot_eval.series_by_metric({"a": by_step})
    assert series["demo_choice/acc"] == {"a": [(2, 0.25, 0.05), (10, 0.5, 0.05), (20, 0.75, 0.05)]}
    # No standard error ("N/A") and no score at step 2: the generative task's line starts at 10.
    assert series["gsm8k_local/exact_match/strict-match"] == {"a": [(10, 0.1, None), (20, 0.3, None)]}


def test_scores_by_metric_and_model_labels(tmp_path):
    scores = plot_eval.scores_by_metric({"base": _results(0.5), "dpo": _results(0.75, 0.2)})
    assert scores == {
        "demo_choice/acc": {"base": (0.5, 0.05), "dpo": (0.75, 0.05)},
        "gsm8k_local/exact_match/strict-match": {"dpo": (0.2, None)},
    }
    named = tmp_path / "anything" / "results.json"
    assert plot_eval.model_label(named, {"lit_align": {"name": "sft-version_3"}}) == "sft-version_3"
    assert plot_eval.model_label(named, {"lit_align": "not a manifest"}) == "anything"
    assert plot_eval.model_label(named, {}) == "anything"
    assert plot_eval.file_name("gsm8k_local/exact_match/strict-match") == "gsm8k_local__exact_match__strict-match.png"


def test_main_plots_runs_and_models(tmp_path, capsys):
    first, second = tmp_path / "logs" / "exp" / "version_0", tmp_path / "logs" / "exp" / "version_1"
    _write_run(first, {0: (0.5, 0.1), 10: (0.6, 0.2)})
    _write_run(second, {0: (0.5, None), 10: (0.7, None), 20: (0.8, None)})
    base, dpo = tmp_path / "eval" / "base", tmp_path / "eval" / "dpo"
    write_results(base, _results(0.5, 0.1), {"name": "base"})
    write_results(dpo, _results(0.8, 0.3), {})  # no name: labelled by its folder
    out = tmp_path / "plots"

    written = plot_eval.main(
        [str(tmp_path / "logs" / "exp"), str(base / "results.json"), str(dpo), "--output", str(out)]
    )

    assert sorted(p.name for p in written) == [
        "demo_choice__acc.png",
        "gsm8k_local__exact_match__strict-match.png",
        "models.png",
    ]
    for path in written:
        data = path.read_bytes()
        assert path.parent == out and data[:8] == PNG_SIGNATURE and len(data) > 5_000
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--overwrite"):
        plot_eval.main([str(first), "--output", str(out)])


def test_a_path_without_scores_is_refused_with_advice(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="callbacks/lm_eval.yaml"):
        plot_eval.main([str(tmp_path / "empty"), "--output", str(tmp_path / "plots")])
    with pytest.raises(SystemExit, match="no such file"):
        plot_eval.main([str(tmp_path / "missing"), "--output", str(tmp_path / "plots")])

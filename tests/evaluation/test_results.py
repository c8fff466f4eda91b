"""lm-eval's result dictionary flattened: every number in the CSV is one of lm-eval's, under the right names."""

import csv
import json

from lit_align.evaluation.results import result_rows, results_table, scalar_metrics, write_results

# The shape lm-eval 0.4 returns (values from a real run of gsm8k_local and demo_choice on the tiny model).
RESULTS = {
    "results": {
        "demo_choice": {
            "alias": "demo_choice",
            "acc,none": 0.75,
            "acc_stderr,none": 0.0993,
            "acc_norm,none": 0.5,
            "acc_norm_stderr,none": 0.1147,
        },
        "gsm8k_local": {
            "alias": "gsm8k_local",
            "exact_match,strict-match": 0.0,
            "exact_match_stderr,strict-match": 0.0,
            "exact_match,flexible-extract": 0.05,
            "exact_match_stderr,flexible-extract": "N/A",
        },
    },
    "n-samples": {
        "demo_choice": {"original": 200, "effective": 20},
        "gsm8k_local": {"original": 1319, "effective": 20},
    },
    "samples": {"demo_choice": [{"doc_id": 0, "acc": 1.0}, {"doc_id": 1, "acc": 0.0}]},
}


def test_one_row_per_task_metric_and_filter():
    rows = result_rows(RESULTS)
    assert [(r["task"], r["metric"], r["filter"]) for r in rows] == [
        ("demo_choice", "acc", "none"),
        ("demo_choice", "acc_norm", "none"),
        ("gsm8k_local", "exact_match", "strict-match"),
        ("gsm8k_local", "exact_match", "flexible-extract"),
    ]
    assert rows[0] == {
        "task": "demo_choice",
        "metric": "acc",
        "filter": "none",
        "value": 0.75,
        "stderr": 0.0993,
        "n": 20,
    }
    assert rows[3]["stderr"] is None  # lm-eval's "N/A"


def test_scalar_names_append_the_filter_unless_none():
    assert scalar_metrics(RESULTS) == {
        "eval/demo_choice/acc": 0.75,
        "eval/demo_choice/acc_norm": 0.5,
        "eval/gsm8k_local/exact_match/strict-match": 0.0,
        "eval/gsm8k_local/exact_match/flexible-extract": 0.05,
    }


def test_written_files(tmp_path):
    written = write_results(tmp_path, RESULTS, {"name": "tiny", "global_step": 30})
    assert [p.name for p in written] == ["results.json", "results.csv", "samples_demo_choice.jsonl"]
    whole = json.loads((tmp_path / "results.json").read_text())
    assert whole["lit_align"] == {"name": "tiny", "global_step": 30}
    assert whole["results"] == RESULTS["results"] and "samples" not in whole
    with (tmp_path / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and table[3] == {
        "task": "gsm8k_local",
        "metric": "exact_match",
        "filter": "flexible-extract",
        "value": "0.05",
        "stderr": "",
        "n": "20",
    }
    lines = (tmp_path / "samples_demo_choice.jsonl").read_text().splitlines()
    assert [json.loads(line)["acc"] for line in lines] == [1.0, 0.0]


def test_table_shows_value_and_stderr():
    table = results_table(RESULTS)
    assert "| demo_choice | acc | none | 0.7500 | 0.0993 | 20 |" in table
    assert "| gsm8k_local | exact_match | flexible-extract | 0.0500 |  | 20 |" in table

"""sweep.json: written with the union of calls, and a call with other base settings refused."""

import json

import pytest

from lit_align.sweeps.grid import SweepError
from lit_align.sweeps.manifest import check_manifest, read_manifest, write_manifest


def test_first_call_writes_the_record(tmp_path):
    check_manifest(tmp_path, ["a.yaml"], [])  # nothing there yet: anything goes
    write_manifest(
        tmp_path,
        ["sweep", "1"],
        ["a.yaml"],
        [("trainer.max_steps", "20")],
        {"x.beta": ["0.1"]},
        [1, 2],
        ["val/loss:min"],
    )
    record = json.loads((tmp_path / "sweep.json").read_text(encoding="utf-8"))
    assert record["configs"] == ["a.yaml"] and record["sets"] == [["trainer.max_steps", "20"]]
    assert record["axes"] == {"x.beta": ["0.1"]} and record["seeds"] == [1, 2]


def test_more_values_and_seeds_are_merged(tmp_path):
    write_manifest(tmp_path, ["first"], ["a.yaml"], [], {"x.beta": ["0.1"]}, [1, 2], [])
    check_manifest(tmp_path, ["a.yaml"], [])
    write_manifest(tmp_path, ["second"], ["a.yaml"], [], {"x.beta": ["0.1", "0.2"]}, [3], [])
    record = read_manifest(tmp_path)
    assert record["axes"] == {"x.beta": ["0.1", "0.2"]} and record["seeds"] == [1, 2, 3]
    assert record["commands"] == [["first"], ["second"]] and record["command"] == ["second"]


def test_other_configs_or_sets_are_refused(tmp_path):
    write_manifest(tmp_path, ["first"], ["a.yaml"], [("trainer.max_steps", "20")], {}, [1], [])
    check_manifest(tmp_path, ["a.yaml"], [("trainer.max_steps", "20")])
    with pytest.raises(SweepError, match=r"base configs \['a.yaml'\] then, \['b.yaml'\] now") as error:
        check_manifest(tmp_path, ["b.yaml"], [("trainer.max_steps", "20")])
    assert "choose another --output" in str(error.value)
    with pytest.raises(SweepError, match="--set differs: trainer.max_steps=20, trainer.max_steps=50"):
        check_manifest(tmp_path, ["a.yaml"], [("trainer.max_steps", "50")])


def test_an_unreadable_record_stops(tmp_path):
    (tmp_path / "sweep.json").write_text("{", encoding="utf-8")
    with pytest.raises(SweepError, match="sweep.json is not valid JSON"):
        check_manifest(tmp_path, [], [])

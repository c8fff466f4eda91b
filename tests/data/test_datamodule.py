"""AlignDataModule on the real shared samples: mixing, language share, buckets, resume, DDP, bad input."""

import json
from collections import Counter

import pytest

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.data.errors import DataFormatError

from ..conftest import SHARED_DATA, TINY_MODEL

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")


def _mixed(**kwargs) -> AlignDataModule:
    sources = [
        DataSource(str(SHARED_DATA / "hh_rlhf_harmless_base.test.jsonl"), name="hh"),
        DataSource(str(SHARED_DATA / "ultrafeedback_binarized.train_prefs.jsonl"), name="uf"),
        DataSource(str(SHARED_DATA / "llamafactory_oaast_rm_zh.train.jsonl"), name="oaast_zh", min_zh_ratio=0.3),
    ]
    # The tiny tokenizer splits text finely: 7 of UltraFeedback's 12 pairs pass 1024 tokens. Cutting them is fine
    # for tests of mixing and sampling, so the truncation limit is lifted here.
    defaults = dict(
        tokenizer=str(TINY_MODEL), task="preference", max_length=1024, batch_size=8, max_truncated_fraction=1.0
    )
    data = AlignDataModule(sources, **{**defaults, **kwargs})
    data.setup()
    return data


@pytest.fixture(scope="module")
def mixed():
    return _mixed(target_zh_share=0.7)


def test_reports_count_every_row(mixed):
    reports = {r.name: r for r in mixed.train_data.reports}
    assert reports["hh"].counts["rows_read"] == 500 and reports["hh"].counts["dropped/empty_turn"] == 1
    assert reports["uf"].counts["skipped/score_tie"] == 4 and reports["uf"].counts["examples"] == 12
    # 775 ranked rows give 1218 pairs; 31 are mostly English and fall under min_zh_ratio 0.3.
    zh = reports["oaast_zh"]
    assert zh.counts["records"] == 1218 and zh.counts["dropped/below_min_zh_ratio"] == 31
    for r in reports.values():
        assert r.counts["examples"] == sum(r.languages.values()) == sum(r.buckets.values())
        assert (
            r.counts["examples"] + sum(v for k, v in r.drops.items() if k.startswith("dropped/")) == r.counts["records"]
        )


def test_batches_come_from_one_bucket_and_hold_the_language_share(mixed):
    sampler = mixed.make_train_sampler(num_replicas=1, rank=0)
    examples = mixed.train_data.examples
    assert mixed.bounds == [256, 1024]
    plan = sampler.plan()
    for batch in plan:
        buckets = {min(b for b in mixed.bounds if examples[i]["length"] <= b) for i in batch}
        assert len(buckets) == 1
    zh = [sum(examples[i]["lang"] == "zh" for i in batch) for batch in plan]
    shares = [sum(zh[t : t + 8]) / 64 for t in range(len(plan) - 7)]
    assert 0.65 <= min(shares) and max(shares) <= 0.75


def test_sampler_order_is_seeded_and_resumes_mid_epoch(mixed):
    batches = iter(mixed.train_dataloader())
    first = [next(batches).input_ids.tolist() for _ in range(5)]
    state = mixed.state_dict()  # no trainer: the sampler's own count of yielded batches
    assert state["sampler"]["batches_yielded"] == 5

    again = _mixed(target_zh_share=0.7)
    assert [b.input_ids.tolist() for _, b in zip(range(5), again.train_dataloader(), strict=False)] == first
    resumed = _mixed(target_zh_share=0.7)
    resumed.load_state_dict(state)
    expected = [next(batches).input_ids.tolist() for _ in range(3)]
    assert [b.input_ids.tolist() for _, b in zip(range(3), resumed.train_dataloader(), strict=False)] == expected


def test_ddp_ranks_get_disjoint_batches_of_equal_count(mixed):
    ranks = [list(mixed.make_train_sampler(num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    assert not {tuple(b) for b in ranks[0]} & {tuple(b) for b in ranks[1]}


def test_weights_set_the_source_mix():
    data = _mixed(bucket_bounds=[1024])
    data.train_sources[0].weight, data.train_sources[1].weight, data.train_sources[2].weight = 3.0, 0.0, 1.0
    counts = Counter(data.train_data.examples[i]["source"] for b in data.make_train_sampler(1, 0).plan() for i in b)
    assert counts["uf"] == 0
    assert counts["hh"] / (counts["hh"] + counts["oaast_zh"]) == pytest.approx(0.75, abs=0.02)


def test_data_card_states_the_counts(mixed):
    card = mixed.data_card()
    assert "| hh | " in card and "| oaast_zh | oaast_zh | dropped/below_min_zh_ratio | 31 |" not in card
    assert "| oaast_zh | dropped/below_min_zh_ratio | 31 |" in card
    assert "| uf | skipped/score_tie | 4 |" in card
    assert "## Expected training mix" in card and "| zh |" in card


def _broken_file(tmp_path):
    rows = [
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
        {"prompt": "Hi", "chosen": "Hello!"},  # line 2: no rejected
        "not json",  # line 3
        {"prompt": "Bye", "chosen": "Goodbye!", "rejected": "Whatever."},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_bad_record_stops_with_file_line_and_field(tmp_path):
    path = _broken_file(tmp_path)
    data = AlignDataModule([DataSource(str(path), format="preference")], tokenizer=str(TINY_MODEL), task="preference")
    with pytest.raises(DataFormatError) as error:
        data.setup()
    assert "pairs.jsonl:2" in str(error.value) and "rejected" in str(error.value)


def test_skip_mode_counts_bad_records_in_the_log_and_the_card(tmp_path, caplog):
    path = _broken_file(tmp_path)
    data = AlignDataModule(
        [DataSource(str(path), format="preference")], tokenizer=str(TINY_MODEL), task="preference", on_error="skip"
    )
    data.setup()
    report = data.train_data.reports[0]
    assert report.counts["rows_read"] == 4 and report.counts["examples"] == 2
    assert report.counts["error/rejected"] == 1 and report.counts["error/row"] == 1
    assert "pairs.jsonl:2" in caplog.text
    card = data.data_card()
    assert "| pairs | error/rejected | 1 |" in card and "| pairs | error/row | 1 |" in card


def test_sft_data_cannot_feed_a_preference_module():
    data = AlignDataModule(
        [DataSource(str(SHARED_DATA / "gsm8k.train.jsonl"))], tokenizer=str(TINY_MODEL), task="preference"
    )
    with pytest.raises(ValueError, match="chat \\(SFT\\) data"):
        data.setup()


def test_validation_records_that_are_also_training_records_are_counted_or_dropped(tmp_path):
    rows = [json.loads(line) for line in (SHARED_DATA / "hh_rlhf_harmless_base.test.jsonl").open()]
    train_rows, leaked = rows[:40], rows[5:8]
    # Different whitespace still counts: the check runs on the normalised records.
    leaked[0] = {**leaked[0], "chosen": leaked[0]["chosen"] + "  \n"}
    for name, split_rows in (("train", train_rows), ("val", [*leaked, *rows[40:42]])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in split_rows))
    kwargs = dict(tokenizer=str(TINY_MODEL), task="preference", max_length=1024)
    train, val = [DataSource(str(tmp_path / "train.jsonl"))], [DataSource(str(tmp_path / "val.jsonl"))]

    warned = AlignDataModule(train, val, **kwargs)
    with pytest.warns(UserWarning, match="3 validation records of val are also training records"):
        warned.setup()
    report = warned.val_data.reports[0]
    assert report.counts["in_train"] == 3 and report.counts["examples"] == 5
    assert "- val: 3" in warned.data_card()

    dropped = AlignDataModule(train, val, val_in_train="drop", **kwargs)
    dropped.setup()
    report = dropped.val_data.reports[0]
    assert report.counts["dropped/in_train"] == 3 and report.counts["examples"] == 2
    assert dropped.train_data.reports[0].counts["examples"] == 40  # training data is never touched
    assert "| val | dropped/in_train | 3 |" in dropped.data_card()


def test_a_plain_val_path_is_one_source_that_replaces_the_list():
    """``lit_align validate ... --data.val held_out.jsonl``: one source, format detected, not added to a list."""
    data = AlignDataModule(train=[DataSource("train.jsonl")], val="held_out.jsonl", tokenizer=str(TINY_MODEL))
    assert data.val_sources == [DataSource(path="held_out.jsonl")]
    assert data.val_sources[0].format == "auto"
    listed = AlignDataModule(train=[], val=[DataSource("a.jsonl"), DataSource("b.jsonl")], tokenizer=str(TINY_MODEL))
    assert [s.path for s in listed.val_sources] == ["a.jsonl", "b.jsonl"]

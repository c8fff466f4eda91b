import bisect
import random
import warnings
from collections import Counter

import pytest
from torch.utils.data import DataLoader, SequentialSampler

from lit_align.data.curriculum import CurriculumStage, stage_at
from lit_align.data.sampler import LengthBucketBatchSampler, systematic_round

BOUNDS = (256, 1024, 2048)
N = 5000


def _lengths(n: int = N, seed: int = 0) -> list[int]:
    """Long-tailed token lengths: lognormal with median e^5.5 ~ 245, clipped to the last bound as the datamodule
    truncates; about 60% land in the first bucket and 6% in the last."""
    rng = random.Random(seed)
    return [min(BOUNDS[-1], max(1, int(rng.lognormvariate(5.5, 0.9)))) for _ in range(n)]


LENGTHS = _lengths()
HALF_ZH = ["zh" if i % 2 else "en" for i in range(N)]


def _padding(batches: list[list[int]], lengths: list[int]) -> float:
    """Mean over batches of ``1 - sum(len) / (len(batch) * max(len))``."""
    fractions = [1 - sum(lengths[i] for i in b) / (len(b) * max(lengths[i] for i in b)) for b in batches]
    return sum(fractions) / len(fractions)


def _window_zh_shares(batches: list[list[int]], languages: list[str], width: int = 8) -> list[float]:
    shares = []
    for t in range(len(batches) - width + 1):
        examples = [i for b in batches[t : t + width] for i in b]
        shares.append(sum(languages[i] == "zh" for i in examples) / len(examples))
    return shares


def _bucket(length: int) -> int:
    return bisect.bisect_left(BOUNDS, length)


def _quiet_plan(sampler: LengthBucketBatchSampler) -> list[list[int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sampler.plan()


def test_stage_at_hand_checked():
    # 200 batches per epoch: stage a ends at 0.25 * 200 = 50, stage b at batch 100, stage c runs to the end.
    a, b, c = CurriculumStage(until=0.25), CurriculumStage(until=100), CurriculumStage(until=0.5)
    stages = [a, b, c]
    assert [stage_at(stages, i, 200) for i in (0, 49, 50, 99, 100, 10_000)] == [a, a, b, b, c, c]
    # With 1000 batches per epoch stage a would end at 250, after stage b's 100: out of order.
    with pytest.raises(ValueError, match="in order"):
        stage_at(stages, 0, 1000)


@pytest.mark.parametrize("until", [0, 1.5, 0.0, True, "3"])
def test_stage_rejects_bad_until(until):
    with pytest.raises((TypeError, ValueError)):
        CurriculumStage(until=until)


def test_systematic_round_hand_checked():
    # Quotas 2.5, 2.5, 5 with cumulative edges 2.5, 5, 10.
    assert systematic_round(10, [1, 1, 2], 0.0) == [2, 3, 5]  # floor(2.5)=2, floor(5)-2=3, 10-5=5
    assert systematic_round(10, [1, 1, 2], 0.6) == [3, 2, 5]  # floor(3.1)=3, floor(5.6)-3=2, floor(10.6)-5=5
    assert systematic_round(7, [0, 3, 0], 0.9) == [0, 7, 0]


def test_same_seed_and_epoch_give_same_batches():
    def make(seed: int = 0) -> LengthBucketBatchSampler:
        return LengthBucketBatchSampler(LENGTHS, 8, languages=HALF_ZH, target_zh_share=0.7, seed=seed)

    first, second = make(), make()
    first.set_epoch(3)
    second.set_epoch(3)
    assert _quiet_plan(first) == _quiet_plan(second) == list(second)
    second.set_epoch(4)
    assert _quiet_plan(second) != _quiet_plan(first)
    assert _quiet_plan(make(seed=1)) != _quiet_plan(make(seed=0))


def test_every_batch_lies_in_one_bucket():
    sources = ["a" if i % 3 else "b" for i in range(N)]
    sampler = LengthBucketBatchSampler(
        LENGTHS, 8, languages=HALF_ZH, sources=sources, target_zh_share=0.7, num_samples=7000, seed=5
    )
    batches = _quiet_plan(sampler)
    assert len(batches) == len(sampler) == 7000 // 8
    for batch in batches:
        assert len(batch) == 8
        assert len({_bucket(LENGTHS[i]) for i in batch}) == 1


def test_bucketed_batches_carry_far_less_padding_than_random_ones():
    bucketed = LengthBucketBatchSampler(LENGTHS, 8).plan()
    with_languages = _quiet_plan(LengthBucketBatchSampler(LENGTHS, 8, languages=HALF_ZH, target_zh_share=0.7))
    order = list(range(N))
    random.Random(0).shuffle(order)
    shuffled = [order[i : i + 8] for i in range(0, N - N % 8, 8)]
    assert _padding(bucketed, LENGTHS) <= 0.10
    assert _padding(with_languages, LENGTHS) <= 0.10
    assert _padding(shuffled, LENGTHS) >= 5 * _padding(with_languages, LENGTHS)


def test_zh_share_holds_over_every_window_and_warns_when_chinese_runs_out():
    sampler = LengthBucketBatchSampler(LENGTHS, 8, languages=HALF_ZH, target_zh_share=0.7, zh_share_tolerance=0.05)
    with pytest.warns(UserWarning, match="Chinese examples ran out"):
        batches = sampler.plan()
    shares = _window_zh_shares(batches, HALF_ZH)
    assert all(abs(share - 0.7) <= 0.05 for share in shares)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per sampler, not once per epoch
        sampler.set_epoch(1)
        sampler.plan()


def test_english_is_a_capped_fallback_when_it_runs_out():
    languages = ["en" if i % 20 == 0 else "zh" for i in range(N)]  # 5% English, target leaves room for 30%
    sampler = LengthBucketBatchSampler(LENGTHS, 8, languages=languages, target_zh_share=0.7)
    with pytest.warns(UserWarning, match="English examples ran out"), pytest.warns(UserWarning, match="off target"):
        batches = sampler.plan()
    english = [i for b in batches for i in b if languages[i] == "en"]
    assert len(english) == len(set(english)) >= N // 20 - 3  # (nearly) every English example once, none twice
    assert all(share >= 0.7 - 0.05 for share in _window_zh_shares(batches, languages))
    # Spread over the epoch, not used up by its first batches: each quarter holds about a quarter of them.
    quarters = [sum(languages[i] == "en" for b in batches[q * 156 : (q + 1) * 156] for i in b) for q in range(4)]
    assert all(abs(count - N // 80) <= 8 for count in quarters), quarters


def test_no_warning_when_the_pool_has_enough_of_each_language():
    languages = ["en" if i % 10 < 3 else "zh" for i in range(N)]
    sampler = LengthBucketBatchSampler(LENGTHS, 8, languages=languages, target_zh_share=0.7, num_samples=N // 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = sampler.plan()
    assert all(abs(share - 0.7) <= 0.05 for share in _window_zh_shares(batches, languages))


def test_source_share_follows_weights_and_repeats_only_the_oversampled_source():
    sources = ["a" if i < 3000 else "b" for i in range(N)]  # b is 40% of the pool but asked for 75%
    sampler = LengthBucketBatchSampler(LENGTHS, 8, sources=sources, source_weights={"a": 1.0, "b": 3.0})
    drawn = [i for b in sampler.plan() for i in b]
    share_b = sum(sources[i] == "b" for i in drawn) / len(drawn)
    assert share_b == pytest.approx(0.75, abs=0.02)
    from_a = [i for i in drawn if sources[i] == "a"]
    assert len(from_a) == len(set(from_a))  # a is under-asked: drawn without replacement


def test_default_weights_use_each_example_about_once():
    drawn = Counter(i for b in LengthBucketBatchSampler(LENGTHS, 8).plan() for i in b)
    # Whole batches per bucket: each of the 3 buckets repeats or skips fewer than 8 examples.
    assert sum(drawn.values()) == N and len(drawn) >= N - 3 * 7


def test_curriculum_starts_short_then_opens_every_bucket():
    stages = [CurriculumStage(until=0.25, bucket_weights={256: 1.0, 1024: 0.0}), CurriculumStage(until=1.0)]
    sampler = LengthBucketBatchSampler(LENGTHS, 8, curriculum=stages)
    boundary = 157  # 625 batches per epoch; stage 0 covers t < 0.25 * 625 = 156.25
    buckets = [_bucket(LENGTHS[b[0]]) for b in sampler.plan()]
    assert set(buckets[:boundary]) == {0}
    assert set(buckets[boundary:]) == {0, 1, 2}
    sampler.set_epoch(1)  # the curriculum runs once, from the start of training
    assert set(_bucket(LENGTHS[b[0]]) for b in sampler.plan()[:boundary]) == {0, 1, 2}

    by_step = [CurriculumStage(until=100, bucket_weights={"256": 1.0}), CurriculumStage(until=1.0)]
    buckets = [_bucket(LENGTHS[b[0]]) for b in LengthBucketBatchSampler(LENGTHS, 8, curriculum=by_step).plan()]
    assert set(buckets[:100]) == {0} and set(buckets[100:200]) == {0, 1, 2}


def test_curriculum_source_weights():
    sources = ["a" if i % 2 else "b" for i in range(N)]
    stages = [CurriculumStage(until=0.5, source_weights={"a": 1.0}), CurriculumStage(until=1.0)]
    batches = LengthBucketBatchSampler(LENGTHS, 8, sources=sources, curriculum=stages).plan()
    half = 313  # t < 0.5 * 625
    assert {sources[i] for b in batches[:half] for i in b} == {"a"}
    assert {sources[i] for b in batches[half:] for i in b} == {"a", "b"}


@pytest.mark.parametrize("num_replicas, rank", [(1, 0), (2, 1)])
def test_resume_continues_with_the_remaining_batches(num_replicas, rank):
    def make() -> LengthBucketBatchSampler:
        return LengthBucketBatchSampler(LENGTHS, 8, seed=3, num_replicas=num_replicas, rank=rank)

    sampler = make()
    sampler.set_epoch(2)
    epoch = list(sampler)
    iterator = iter(sampler)
    consumed = [next(iterator) for _ in range(7)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "batches_yielded": 7, "seed": 3}

    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # Lightning sets the epoch again when the resumed epoch starts
    assert consumed + list(resumed) == epoch
    resumed.set_epoch(3)
    sampler.set_epoch(3)
    assert list(resumed) == list(sampler)
    with pytest.raises(ValueError, match="seed"):
        LengthBucketBatchSampler(LENGTHS, 8, seed=4).load_state_dict(state)


def test_ddp_ranks_get_disjoint_batches_of_equal_count():
    kwargs = dict(languages=HALF_ZH, target_zh_share=0.7, seed=1)
    single = _quiet_plan(LengthBucketBatchSampler(LENGTHS, 8, num_replicas=1, **kwargs))
    ranks = [LengthBucketBatchSampler(LENGTHS, 8, num_replicas=2, rank=r, **kwargs) for r in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = list(ranks[0]), list(ranks[1])
    assert len(single) == 625
    assert len(first) == len(second) == len(ranks[0]) == len(ranks[1]) == 312
    assert not {tuple(b) for b in first} & {tuple(b) for b in second}
    assert [b for pair in zip(first, second, strict=True) for b in pair] == single[:624]


def test_keep_last_short_batch_and_pad_ranks():
    lengths = LENGTHS[:1003]
    kept = LengthBucketBatchSampler(lengths, 8, drop_last=False).plan()
    assert sorted(len(b) for b in kept)[0] == 3 and sum(map(len, kept)) == 1003
    ranks = [LengthBucketBatchSampler(lengths, 8, drop_last=False, num_replicas=4, rank=r) for r in range(4)]
    assert [len(r) for r in ranks] == [32] * 4  # 126 batches padded to 128 by repeating the first two
    assert ranks[0].plan()[-2:] == ranks[0].plan()[:2]


def test_works_as_a_dataloader_batch_sampler_and_follows_lightning_epochs():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    sampler = LengthBucketBatchSampler(LENGTHS[:80], 4)
    loader = DataLoader(LENGTHS[:80], batch_sampler=sampler, collate_fn=list)
    assert [len(batch) for batch in loader] == [4] * 20
    _set_sampler_epoch(loader, 4)
    assert sampler.state_dict()["epoch"] == 4


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="example 1 has 3000 tokens"):
        LengthBucketBatchSampler([10, 3000], 1)
    with pytest.raises(TypeError, match="use_distributed_sampler=False"):
        LengthBucketBatchSampler(SequentialSampler(range(4)), batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match="source weights"):
        LengthBucketBatchSampler([10, 20], 1, sources=["a", "b"], source_weights={"c": 1.0})
    with pytest.raises(ValueError, match="bucket_weights"):
        LengthBucketBatchSampler([10, 20], 1, curriculum=[CurriculumStage(until=1.0, bucket_weights={512: 1.0})])

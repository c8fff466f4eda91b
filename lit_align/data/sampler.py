"""``LengthBucketBatchSampler``: batches of similar length, mixed by source and language, the same on every rerun.

Why: a batch is padded to its longest row, so a random batch from a long-tailed length distribution is mostly
padding. Grouping by length removes most of it, but a plain sort would also sort the training stream by length and
by source. This sampler plans each epoch as pure index arithmetic over per-example metadata (length, language,
source), so it is testable without a tokenizer, and it makes every trade-off a counted quota, not a random draw:

1. Batch count: ``T = num_samples // batch_size`` (plus one short batch when ``drop_last`` is off).
2. Curriculum: `stage_at` gives batch ``t`` of epoch ``e`` the stage of index ``e * T + t``, so a curriculum runs
   once from the start of training; consecutive batches with one stage form a segment.
3. Buckets: every batch comes from one length bucket. A segment's ``n`` batches are split over buckets in
   proportion to the stage's ``bucket_weights``, or else to the bucket's source-weighted mass
   ``m_b = sum over examples i in b of w(source_i) / size(source_i)``, by `systematic_round`, then shuffled.
4. Language (only with ``target_zh_share = p``): batch ``t`` of ``n_t`` examples gets ``k_t`` Chinese slots by
   error diffusion, ``k_t = floor(p_b * n_t + c_t + 1/2)`` and ``c_{t+1} = p_b * n_t + c_t - k_t`` (``p_b`` is
   the aim of the batch's bucket, ``p`` unless English is short), so the Chinese count of any run of batches stays
   within one example of its aim: a window of 8 batches of 8 is held to within 1/64 of ``p``. English is a capped
   fallback (English share <= 1 - p): a bucket with ``E_b`` English examples for ``S_b`` slots aims at
   ``p_b = max(p, 1 - E_b / S_b)``, so scarce English is spread over the epoch and Chinese fills the rest; scarce
   Chinese repeats instead. A batch that cannot meet its quota (a bucket
   without Chinese) takes what there is and ``c`` is clipped to ``[-1/2, 1/2]``, so no debt floods later batches.
   Each shortage is reported by one warning, and so is any window of ``window_batches`` batches whose share
   strays more than ``zh_share_tolerance`` from ``p``.
5. Sources: the slots of one (segment, bucket, language) are split over sources in proportion to
   ``w(source) * size(cell) / size(source)`` by `systematic_round`. Each (bucket, language, source) cell is read
   as a shuffled permutation, reshuffled only when used up, so examples repeat only when the weights (or the
   language target) ask for more than the cell holds; with default weights a bucket repeats or skips fewer than
   ``batch_size`` examples per segment, because its batches come in whole numbers.
6. Length grouping: a bucket's batches are cut 50 at a time; the slots of those 50 are filled from the cell
   draws sorted by length (Chinese and English sorted separately, so a batch takes the same quantile of each),
   then batches of the same language make-up swap contents at random, so the stream has no length trend.
7. Ranks: the plan is global and the same on every rank (seeded by ``seed`` and ``epoch`` only). It is cut to a
   multiple of ``num_replicas`` batches (``drop_last``) or padded by repeating its first batches, and rank ``r``
   takes batches ``r, r + num_replicas, ...``.

Quotas use `systematic_round` (every count is the floor or ceiling of its share, and unbiased over epochs) rather
than independent draws, so shares hold in every segment, not just on average.
"""

from __future__ import annotations

import bisect
import math
import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from itertools import accumulate, groupby

import torch.distributed as dist
from torch.utils.data import Sampler

from lit_align.data.curriculum import CurriculumStage, stage_at

_SORT_CHUNK_BATCHES = 50
_ZH, _OTHER = "zh", "other"


def systematic_round(total: int, weights: Sequence[float], offset: float) -> list[int]:
    """Split ``total`` into integer counts proportional to ``weights``.

    ``count_i = floor(C_i + u) - floor(C_{i-1} + u)`` with ``C_i = total * (w_1 + ... + w_i) / sum(w)`` and
    ``u = offset`` in ``[0, 1)``: the counts sum to ``total``, each is the floor or ceiling of its quota, and over a
    uniform ``u`` each has its quota as expectation (systematic sampling, Madow 1949).
    """
    norm = sum(weights)
    if norm <= 0:
        raise ValueError(f"cannot split {total} over weights {list(weights)} with no positive weight")
    counts, cum, previous = [], 0.0, math.floor(offset)
    for i, weight in enumerate(weights):
        cum += weight
        edge = math.floor(total + offset) if i == len(weights) - 1 else math.floor(total * cum / norm + offset)
        counts.append(edge - previous)
        previous = edge
    return counts


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Yield lists of dataset indices, one length bucket per batch; use as ``DataLoader(ds, batch_sampler=...)``.

    Args:
        lengths: Token length per example (for preference pairs the longer of chosen and rejected).
        batch_size: Examples per batch on each device.
        languages: Language code per example; codes starting with ``zh`` count as Chinese, all others as English.
        sources: Source name per example (default: one source).
        bucket_bounds: Bucket ``i`` holds lengths in ``(bounds[i-1], bounds[i]]``; longer examples are an error.
        source_weights: Relative weight per source; unlisted sources get 0 (default: each source's size).
        target_zh_share: Share of Chinese examples in the stream (``None``: languages are not balanced).
        zh_share_tolerance: Allowed deviation from the target over any window before a warning.
        window_batches: Window length, in consecutive batches of the global plan, for that check.
        curriculum: Stages that override source and bucket weights for the first batches of training.
        num_samples: Examples per epoch (default: ``len(lengths)``).
        seed: Seed of the plan; with the epoch it fixes every batch.
        num_replicas: Number of ranks (default: the world size when torch.distributed is initialised, else 1).
        rank: This rank (default: the torch.distributed rank, else 0).
        drop_last: Drop the final short batch and cut the plan to a multiple of ``num_replicas``; otherwise keep
            it and pad the plan by repeating its first batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        languages: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        bucket_bounds: Sequence[int] = (256, 1024, 2048),
        source_weights: Mapping[str, float] | None = None,
        target_zh_share: float | None = None,
        zh_share_tolerance: float = 0.05,
        window_batches: int = 8,
        curriculum: Sequence[CurriculumStage] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(lengths, Sampler):
            # Lightning re-instantiates unknown batch samplers as cls(DistributedSampler, batch_size=..., ...).
            raise TypeError(
                "LengthBucketBatchSampler got a sampler as `lengths`; it shards batches across ranks itself, "
                "so run it with Trainer(use_distributed_sampler=False)"
            )
        n = len(lengths)
        if n == 0 or batch_size < 1:
            raise ValueError(f"need at least one example and batch_size >= 1, got {n} examples, batch {batch_size}")
        for name, values in (("languages", languages), ("sources", sources)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} lengths")
        if target_zh_share is not None and (languages is None or not 0.0 <= target_zh_share <= 1.0):
            raise ValueError("target_zh_share needs `languages` and a value in [0, 1]")
        bounds = [int(b) for b in bucket_bounds]
        if not bounds or any(b <= a for a, b in zip([0, *bounds], bounds, strict=False)):
            raise ValueError(f"bucket_bounds must be positive and increasing, got {bounds}")
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")

        self.lengths = [int(length) for length in lengths]
        self.batch_size, self.bucket_bounds = batch_size, tuple(bounds)
        self.target_zh_share, self.zh_share_tolerance = target_zh_share, zh_share_tolerance
        self.window_batches = window_batches
        self.num_samples = n if num_samples is None else num_samples
        self.seed, self.num_replicas, self.rank, self.drop_last = seed, num_replicas, rank, drop_last
        self.epoch, self._yielded, self._resume_at = 0, 0, 0
        self._cache: tuple[int, list[list[int]]] | None = None
        self._warned: set[str] = set()

        too_long = next((i for i, length in enumerate(self.lengths) if length > bounds[-1]), None)
        if too_long is not None:
            raise ValueError(
                f"example {too_long} has {self.lengths[too_long]} tokens, over the last bucket bound {bounds[-1]}"
            )
        self._langs = (_ZH, _OTHER) if target_zh_share is not None else ("",)
        source_of = list(sources) if sources is not None else [""] * n
        self._cells: dict[tuple[int, str, str], list[int]] = defaultdict(list)
        for i, length in enumerate(self.lengths):
            lang = "" if target_zh_share is None else _ZH if str(languages[i]).lower().startswith("zh") else _OTHER
            self._cells[bisect.bisect_left(bounds, length), lang, source_of[i]].append(i)
        self._source_sizes = Counter(source_of)
        base = dict(self._source_sizes) if source_weights is None else self._check_sources(source_weights)
        self._stages = list(curriculum) if curriculum else [CurriculumStage(until=1.0)]
        self._stage_weights = [
            base if s.source_weights is None else self._check_sources(s.source_weights) for s in self._stages
        ]
        self._stage_buckets = [
            self._bucket_shares(s, w) for s, w in zip(self._stages, self._stage_weights, strict=True)
        ]

    def _check_sources(self, weights: Mapping[str, float]) -> dict[str, float]:
        unknown = set(weights) - set(self._source_sizes)
        if unknown or any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(
                f"source weights {dict(weights)} must be >= 0, not all 0, over {sorted(self._source_sizes)}"
            )
        return {source: float(weights.get(source, 0.0)) for source in self._source_sizes}

    def _bucket_shares(self, stage: CurriculumStage, weights: dict[str, float]) -> list[float]:
        """Share of a stage's batches per bucket; buckets without weighted examples get none."""
        mass = [0.0] * len(self.bucket_bounds)
        for (b, _, source), cell in self._cells.items():
            mass[b] += weights[source] * len(cell) / self._source_sizes[source]
        if stage.bucket_weights is None:
            return mass
        given = {int(bound): float(w) for bound, w in stage.bucket_weights.items()}
        if set(given) - set(self.bucket_bounds):
            raise ValueError(f"bucket_weights {stage.bucket_weights} name a bound outside {self.bucket_bounds}")
        shares = [given.get(bound, 0.0) if mass[b] > 0 else 0.0 for b, bound in enumerate(self.bucket_bounds)]
        if not any(s > 0 for s in shares):
            raise ValueError(f"bucket_weights {stage.bucket_weights} give no weight to a bucket with examples")
        return shares

    @property
    def sampler(self) -> LengthBucketBatchSampler:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler``, never on the batch sampler itself."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._yielded, self._resume_at = epoch, 0, 0

    def state_dict(self) -> dict[str, int]:
        """Position in the epoch. With DataLoader workers the sampler runs ahead of training by up to
        ``num_workers * prefetch_factor`` batches; store the trainer's consumed count instead when that matters."""
        return {"epoch": self.epoch, "batches_yielded": self._yielded, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """The next iteration continues the saved epoch after its ``batches_yielded`` batches on this rank."""
        if state["seed"] != self.seed:
            raise ValueError(f"cannot resume a plan made with seed {state['seed']} with seed {self.seed}")
        self.epoch, self._yielded, self._resume_at = state["epoch"], state["batches_yielded"], state["batches_yielded"]

    def _batch_sizes(self) -> list[int]:
        full, rest = divmod(self.num_samples, self.batch_size)
        return [self.batch_size] * full + ([rest] if rest and not self.drop_last else [])

    def __len__(self) -> int:
        total = len(self._batch_sizes())
        return total // self.num_replicas if self.drop_last else -(-total // self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.plan()[self.rank :: self.num_replicas]
        start, self._resume_at = self._resume_at, 0
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1
            yield list(batch)

    def plan(self) -> list[list[int]]:
        """Every batch of the current epoch for all ranks, in order; rank ``r`` gets ``plan()[r::num_replicas]``."""
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._plan_epoch(self.epoch)
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % self.num_replicas]
            elif batches:
                batches += [batches[i % len(batches)] for i in range(-len(batches) % self.num_replicas)]
            self._cache = (self.epoch, batches)
        return [list(batch) for batch in self._cache[1]]

    def _plan_epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"lit_align.sampler:{self.seed}:{epoch}")
        sizes = self._batch_sizes()
        total = len(sizes)
        stage_id = {id(stage): s for s, stage in enumerate(self._stages)}
        stage_ids = [stage_id[id(stage_at(self._stages, epoch * total + t, total))] for t in range(total)]
        ends = [0, *accumulate(len(list(run)) for _, run in groupby(stage_ids))]
        segments = [(stage_ids[start], start, end) for start, end in zip(ends, ends[1:], strict=False)]
        buckets = [0] * total
        for s, start, end in segments:
            counts = systematic_round(end - start, self._stage_buckets[s], rng.random())
            labels = [b for b, count in enumerate(counts) for _ in range(count)]
            rng.shuffle(labels)
            buckets[start:end] = labels
        shapes = self._language_shapes(sizes, buckets, stage_ids)
        streams: dict[tuple[int, str, str], list[int]] = {}
        plan: list[list[int]] = [[] for _ in range(total)]
        for s, start, end in segments:
            for b in range(len(self.bucket_bounds)):
                members = [t for t in range(start, end) if buckets[t] == b]
                if members:
                    self._fill(rng, streams, s, b, members, shapes, plan)
        return plan

    def _language_shapes(self, sizes: list[int], buckets: list[int], stage_ids: list[int]) -> list[tuple[int, ...]]:
        """Examples per language for each batch: ``(n_t,)``, or ``(k_t, n_t - k_t)`` by error diffusion.

        Bucket ``b`` aims at ``p_b = max(p, 1 - E_b / S_b)`` (``E_b`` its English examples, ``S_b`` its slots this
        epoch), so scarce English is spread over the whole epoch instead of being used up by its first batches.
        """
        p = self.target_zh_share
        if p is None:
            return [(n,) for n in sizes]
        available: Counter[tuple[int, int, str]] = Counter()  # examples with weight, per (stage, bucket, language)
        have: Counter[tuple[int, str]] = Counter()
        for (b, lang, source), cell in self._cells.items():
            have[b, lang] += len(cell)
            for s, weights in enumerate(self._stage_weights):
                available[s, b, lang] += len(cell) if weights[source] > 0 else 0
        slots: Counter[int] = Counter()
        for n, b in zip(sizes, buckets, strict=True):
            slots[b] += n
        aim = {b: max(p, 1 - have[b, _OTHER] / slots[b]) for b in slots}
        shapes, carry, used, ran_out = [], 0.0, Counter(), {_ZH: False, _OTHER: any(a > p for a in aim.values())}
        for n, b, s in zip(sizes, buckets, stage_ids, strict=True):
            want = aim[b] * n + carry
            low = max(0, n - (available[s, b, _OTHER] - used[b, _OTHER]))
            high = n if available[s, b, _ZH] else 0
            k = 0 if low > high else min(max(math.floor(want + 0.5), low), high)
            ran_out[_OTHER] |= k > math.floor(want + 0.5)
            ran_out[_ZH] |= k < math.floor(want + 0.5)
            carry = min(max(want - k, -0.5), 0.5)
            used[b, _ZH] += k
            used[b, _OTHER] += n - k
            shapes.append((k, n - k))
        # Whole batches per bucket repeat fewer than batch_size examples by themselves; more is the target's doing.
        ran_out[_ZH] |= any(used[b, _ZH] >= have[b, _ZH] + self.batch_size for b in slots)
        for lang, name, share in ((_ZH, "Chinese", p), (_OTHER, "English", 1 - p)):
            if ran_out[lang]:
                counts = [f"<= {x}: {share * slots[b]:.0f}/{have[b, lang]}" for b, x in enumerate(self.bucket_bounds)]
                self._warn(lang, f"{name} examples ran out; target/available per bucket {', '.join(counts)}")
        self._check_windows(shapes)
        return shapes

    def _check_windows(self, shapes: list[tuple[int, ...]]) -> None:
        """Warn once if the Chinese share of some ``window_batches`` consecutive batches is off target."""
        zh, size = [0, *accumulate(k for k, _ in shapes)], [0, *accumulate(k + rest for k, rest in shapes)]
        width = min(self.window_batches, len(shapes))
        if not width:
            return
        for t in range(len(shapes) - width + 1):
            share = (zh[t + width] - zh[t]) / max(size[t + width] - size[t], 1)
            if abs(share - self.target_zh_share) > self.zh_share_tolerance:
                self._warn("window", f"Chinese share {share:.3f} over batches {t}..{t + width - 1} is off target")
                return

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned and self.rank == 0:
            p = self.target_zh_share
            note = f"target_zh_share={p}: English is capped at {1 - p:.2f} and Chinese fills in or repeats"
            warnings.warn(f"LengthBucketBatchSampler: {message} ({note})", stacklevel=2)
        self._warned.add(key)

    def _draw(self, rng: random.Random, streams: dict, s: int, b: int, lang: str, count: int) -> list[int]:
        """``count`` examples of one bucket and language, split over sources by weight, in random order."""
        cells = [(source, cell) for (cb, cl, source), cell in self._cells.items() if cb == b and cl == lang]
        weights = self._stage_weights[s]
        mass = [weights[source] * len(cell) / self._source_sizes[source] for source, cell in cells]
        if not any(mass):  # a bucket with no weighted example of this language: take any (only when forced)
            mass = [len(cell) for _, cell in cells]
        drawn = []
        for (source, cell), take in zip(cells, systematic_round(count, mass, rng.random()), strict=True):
            stream = streams.setdefault((b, lang, source), [])
            for _ in range(take):
                if not stream:
                    stream.extend(cell)
                    rng.shuffle(stream)
                drawn.append(stream.pop())
        rng.shuffle(drawn)
        return drawn

    def _fill(
        self, rng: random.Random, streams: dict, s: int, b: int, members: list[int], shapes: list, plan: list
    ) -> None:
        """Fill the batches ``members`` of one segment and bucket, length-sorted 50 batches at a time."""
        needs = [sum(shapes[t][li] for t in members) for li in range(len(self._langs))]
        pools = [
            self._draw(rng, streams, s, b, lang, need) if need else []
            for lang, need in zip(self._langs, needs, strict=True)
        ]
        cursor = [0] * len(self._langs)
        for first in range(0, len(members), _SORT_CHUNK_BATCHES):
            chunk = members[first : first + _SORT_CHUNK_BATCHES]
            contents: list[list[int]] = [[] for _ in chunk]
            for li in range(len(self._langs)):
                need = sum(shapes[t][li] for t in chunk)
                part = sorted(pools[li][cursor[li] : cursor[li] + need], key=self.lengths.__getitem__)
                cursor[li] += need
                for j, t in enumerate(chunk):
                    contents[j] += part[: shapes[t][li]]
                    part = part[shapes[t][li] :]
            by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
            for j, t in enumerate(chunk):
                by_shape[shapes[t]].append(j)
            for positions in by_shape.values():
                swapped = [contents[j] for j in positions]
                rng.shuffle(swapped)
                for j, batch in zip(positions, swapped, strict=True):
                    plan[chunk[j]] = sorted(batch, key=self.lengths.__getitem__)

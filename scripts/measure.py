"""Measurement helpers of the benchmark scripts (`benchmark.py`, `benchmark_memory.py`): memory, step timing, and
one measured configuration per subprocess.

Memory. The peak resident set size that ``getrusage`` reports is the peak over the process's whole life, so every
configuration runs in a fresh subprocess and reports differences from a baseline taken just before its model
loads. CPU tensors live in malloc'd memory, which ``tracemalloc`` does not see, and torch's CPU allocator keeps no
peak statistics, so a thread also samples glibc's ``mallinfo2`` in-use bytes (live tensors and Python objects)
every 2 ms. RSS keeps what malloc freed but holds for reuse, so a one-off peak stays in it; the in-use peak of the
training steps alone leaves set-up peaks out.

Time. A training step is timed from the start of its batch to the end of its optimizer step (the data loader is
not timed), after some untimed warm-up steps. Tokens count the batch's attention-mask ones (padding left out);
positions count every token the forward processed, so ``1 - tokens / positions`` is the padding fraction.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


@functools.cache
def _libc_mallinfo2():
    function = ctypes.CDLL("libc.so.6").mallinfo2
    function.restype = _MallInfo2
    return function


def malloc_in_use_mb() -> float:
    """Bytes malloc has handed out and not had back: in-use heap chunks plus mmapped blocks (glibc 2.33+)."""
    info = _libc_mallinfo2()()
    return (info.uordblks + info.hblkhd) / 2**20


class InUseSampler(threading.Thread):
    """Peak of ``malloc_in_use_mb`` per phase (``setup``, ``train``), sampled while ``phase`` is set."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval, self.phase, self.peaks = interval, None, {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            if self.phase is not None:
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), malloc_in_use_mb())
            time.sleep(self.interval)


class StepMeter:
    """Tokens, positions and seconds of the timed steps, and memory from a baseline taken at ``begin()``.

    Call ``begin()`` just before the model loads, ``start(attention_mask)`` when a step's batch is ready (the first
    call switches the in-use sampler from ``setup`` to ``train``), ``stop()`` after its optimizer step, and
    ``result()`` at the end. The first ``warmup`` steps are not timed."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.steps, self.timed = warmup, 0, 0
        self.tokens = self.positions = 0
        self.seconds = 0.0
        self.sampler = InUseSampler()
        self.fit_start = self.first_batch = self._start = None

    def begin(self) -> None:
        self.baseline_rss, self.baseline_in_use = current_rss_mb(), malloc_in_use_mb()
        self.sampler.start()
        self.sampler.phase = "setup"
        self.fit_start = time.perf_counter()

    def start(self, attention_mask) -> None:
        if self.first_batch is None:
            self.first_batch = time.perf_counter()
            self.sampler.phase = "train"
        self._mask = attention_mask
        self._start = time.perf_counter()

    def stop(self) -> None:
        seconds = time.perf_counter() - self._start
        if self.steps >= self.warmup:
            self.seconds += seconds
            self.tokens += int(self._mask.sum())
            self.positions += self._mask.numel()
            self.timed += 1
        self.steps += 1

    def result(self) -> dict:
        self.sampler.stopped.set()
        self.sampler.join()
        peaks = self.sampler.peaks
        return {
            "timed_steps": self.timed,
            "tokens": self.tokens,
            "positions": self.positions,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens / self.seconds if self.seconds else float("nan"),
            "padding_fraction": 1 - self.tokens / self.positions if self.positions else float("nan"),
            "baseline_rss_mb": self.baseline_rss,
            "rss_peak_delta_mb": peak_rss_mb() - self.baseline_rss,
            "setup_in_use_delta_mb": peaks.get("setup", self.baseline_in_use) - self.baseline_in_use,
            "train_in_use_delta_mb": peaks.get("train", self.baseline_in_use) - self.baseline_in_use,
            "setup_seconds": (self.first_batch or time.perf_counter()) - self.fit_start,
        }


def measure_fit(module, datamodule, meter: StepMeter, workdir: Path, **trainer_settings) -> dict:
    """``Trainer.fit`` for ``meter.warmup + steps`` steps on one CPU device, measured by ``meter`` from just
    before ``fit`` (where the module loads its model); ``trainer_settings`` add to or override the Trainer's."""
    from lightning.pytorch import Callback, Trainer

    class Meter(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            meter.start(batch.attention_mask)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            meter.stop()

    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "limit_val_batches": 0,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(workdir),
        "callbacks": [Meter()],
        **trainer_settings,
    }
    trainer = Trainer(**settings)
    meter.begin()
    trainer.fit(module, datamodule=datamodule)
    return meter.result()


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting on I/O) since boot."""
    with open("/proc/stat") as stat:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_idle(max_seconds: float, cores: float = 0.25, interval: float = 1.0) -> float:
    """Wait (at most ``max_seconds``) until other processes keep fewer than ``cores`` busy over ``interval``;
    the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_seconds:
        busy = _busy_cpu_seconds()
        time.sleep(interval)
        if _busy_cpu_seconds() - busy < cores * interval:
            break
    return time.perf_counter() - start


def run_json(command: list[str], name: str, cwd: Path) -> dict:
    """Run ``command`` (a script's ``--run`` mode) in a fresh process; the JSON object on its last stdout line,
    with ``process_seconds`` (its wall time) and ``other_cpu_cores``: the cores that other processes of the machine
    kept busy meanwhile, on average (a run that shared the CPU with another job has slower, unreliable timings)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start, busy, children = time.perf_counter(), _busy_cpu_seconds(), _children_cpu_seconds()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    others = (_busy_cpu_seconds() - busy) - (_children_cpu_seconds() - children)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    return {**row, "process_seconds": seconds, "other_cpu_cores": max(0.0, others / seconds)}


def interleaved_rounds(
    systems: list[str],
    rounds: int,
    command: Callable[[str, int], list[str]],
    cwd: Path,
    describe: Callable[[dict], str],
    wait_idle: float = 0.0,
) -> list[dict]:
    """`run_json` of every system once per round, the order rotated by one each round so that a slow spell of a
    shared machine falls on different systems; a system that reports itself skipped is not run again. Prints one
    line per run: ``describe(run)``, its seconds and the CPU other jobs used."""
    runs, skipped = [], set()
    for round_index in range(rounds):
        shift = round_index % len(systems)
        for name in systems[shift:] + systems[:shift]:
            if name in skipped:
                continue
            waited = wait_for_idle(wait_idle) if wait_idle else 0.0
            run = {**run_json(command(name, round_index), name, cwd), "waited_for_idle_seconds": waited}
            runs.append(run)
            if "skipped" in run:
                skipped.add(name)
            summary = run.get("skipped") or describe(run)
            seconds, others = run["process_seconds"], run["other_cpu_cores"]
            print(f"round {round_index} {name}: {summary} ({seconds:.0f} s, other jobs {others:.2f} cores)", flush=True)
    return runs


def by_round(runs: list[dict], name: str, key: str) -> dict[int, float]:
    """``{round: value of key}`` over the runs of system ``name`` that were not skipped."""
    return {run["round"]: run[key] for run in runs if run["system"] == name and "skipped" not in run}


def median_rows(runs: list[dict], systems: list[str], keys: tuple[str, ...]) -> list[dict]:
    """One row per system: ``{"system", "skipped"}`` for one that skipped, else the rounds it ran, the median over
    rounds of each of ``keys``, and ``other_cpu_cores_max``. Ratio columns are each benchmark's own."""
    rows = []
    for name in systems:
        skipped = next((run["skipped"] for run in runs if run["system"] == name and "skipped" in run), None)
        if skipped is not None:
            rows.append({"system": name, "skipped": skipped})
            continue
        row = {"system": name, "rounds": len(by_round(runs, name, keys[0]))}
        row.update({key: statistics.median(by_round(runs, name, key).values()) for key in keys})
        row["other_cpu_cores_max"] = max(by_round(runs, name, "other_cpu_cores").values())
        rows.append(row)
    return rows

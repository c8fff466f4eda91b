"""Run the planned runs that are not finished yet, N at a time, and say how each went.

A run is finished exactly when its ``run.json`` (written by ``lit_align fit`` itself) says ``"status":
"finished"``; nothing else counts, not even an exit code 0 or a final checkpoint. A folder that exists but is not
finished (a killed, failed or interrupted run) is renamed to ``<run dir>.attempt-<n>``, never deleted, and the
run starts again in a fresh folder: its logs and checkpoints stay for a post-mortem, and the new run's curves
never mix with the old one's.

A run that exits without writing ``run.json`` never got as far as training: the recipe or an override is wrong
(a misspelt grid key, a missing file), and every other run of the grid would most likely fail the same way. The
sweep then starts no further run and shows the run's ``error:`` line; the runs already going finish.

Runs are subprocesses. With ``jobs > 1`` they share the machine's cores; each gets ``OMP_NUM_THREADS`` = cores /
jobs unless the caller set it, since N runs with all cores each spend their time fighting over them.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

FINISHED = "finished"
NOT_STARTED = "not started"
RUN_RECORD = "run.json"
LOG_NAME = "output.log"


def read_run_record(run_dir: Path) -> dict | None:
    """The run's ``run.json``, or None when it is missing or unreadable."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_status(run_dir: Path) -> str:
    """``finished``, ``running``, ``failed``, ``interrupted`` (from run.json), ``no run.json`` (a folder without
    one: killed before it was written), or ``not started`` (no folder)."""
    if not run_dir.exists():
        return NOT_STARTED
    record = read_run_record(run_dir)
    if record is None:
        return "no run.json" if not (run_dir / RUN_RECORD).exists() else "unreadable run.json"
    return str(record.get("status", "no status in run.json"))


def action_for(status: str) -> str:
    """``skip`` a finished run, ``run`` one never started, ``rerun`` any other (after moving its folder aside)."""
    return "skip" if status == FINISHED else "run" if status == NOT_STARTED else "rerun"


def attempt_path(run_dir: Path) -> Path:
    """``<run dir>.attempt-<n>`` for the smallest n >= 1 not taken."""
    n = 1
    while run_dir.with_name(f"{run_dir.name}.attempt-{n}").exists():
        n += 1
    return run_dir.with_name(f"{run_dir.name}.attempt-{n}")


def move_aside(run_dir: Path) -> Path:
    """Rename an unfinished run's folder to its next free ``.attempt-<n>`` and return the new path."""
    target = attempt_path(run_dir)
    run_dir.rename(target)
    return target


def thread_env(jobs: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The runs' environment: ``OMP_NUM_THREADS = max(1, cores // jobs)`` added when ``jobs > 1`` and unset."""
    env = dict(os.environ if environ is None else environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def run_one(command: list[str], run_dir: Path, cwd: Path, env: dict[str, str]) -> tuple[str, float]:
    """Run ``command`` with stdout and stderr in ``<run_dir>/output.log``; ``(status from run.json, seconds)``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir / LOG_NAME, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        subprocess.run(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    status = run_status(run_dir)
    return ("failed" if status == NOT_STARTED else status), time.perf_counter() - start


def error_line(log: Path) -> str | None:
    """The last ``error: ...`` line lit_align printed into a run's log (a bad setting, a bad record), if any."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    return next((line.strip() for line in reversed(lines) if line.startswith("error:")), None)


def execute(
    jobs: list[tuple[str, list[str], Path]],
    cwd: Path,
    parallel: int = 1,
    env: dict[str, str] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run ``(name, command, run_dir)`` jobs, ``parallel`` at a time; ``{name: status}``. One line per job:
    ``[3/8] beta-0.05/seed-2 finished in 61 s`` or ``... failed (see <run_dir>/output.log)`` and its ``error:``
    line. After a run that could not start (no run.json), the jobs not yet started stay ``not started``."""
    env = thread_env(parallel) if env is None else env
    lock, done, statuses = threading.Lock(), [0], {}
    could_not_start = threading.Event()

    def one(job: tuple[str, list[str], Path]) -> None:
        name, command, run_dir = job
        if could_not_start.is_set():
            with lock:
                done[0] += 1
                statuses[name] = NOT_STARTED
                say(f"[{done[0]}/{len(jobs)}] {name} not started: an earlier run could not start")
            return
        status, seconds = run_one(command, run_dir, cwd, env)
        if status == "no run.json":
            could_not_start.set()
        with lock:
            done[0] += 1
            statuses[name] = status
            if status == FINISHED:
                outcome = f"finished in {seconds:.0f} s"
            else:
                why = "" if status == "failed" else f" (run.json: {status})"
                outcome = f"failed{why} (see {run_dir / LOG_NAME})"
                if error := error_line(run_dir / LOG_NAME):
                    outcome += f"\n    {error}"
            say(f"[{done[0]}/{len(jobs)}] {name} {outcome}")

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for future in [pool.submit(one, job) for job in jobs]:
            future.result()
    return statuses

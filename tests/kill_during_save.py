"""SIGKILL a checkpoint writer in the middle of its saves, for the tests that checkpoints survive it."""

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable


def kill_during_saves(
    writer: list[str],
    env: dict[str, str],
    saved: Callable[[], object],
    saving: Callable[[], bool],
    check: Callable[[], None],
    rounds: int = 3,
    seed: int = 0,
    into_save: float = 0.0,
) -> int:
    """Run the program ``writer`` (which saves checkpoints until killed) ``rounds`` times. Each time: wait until
    ``saved()`` changes (it has saved at least once), wait a random moment, wait for ``saving()`` (a save is under
    way) and up to ``into_save`` seconds more, SIGKILL it, and call ``check()``. Returns how many kills landed while
    ``saving()`` still held."""
    rng = random.Random(seed)
    killed_mid_save = 0
    for _ in range(rounds):
        before = saved()
        process = subprocess.Popen(
            [sys.executable, *writer], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 120
            while saved() == before:
                assert process.poll() is None and time.monotonic() < deadline, "the writer did not start saving"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            deadline = time.monotonic() + 20
            while not saving() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, into_save))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        killed_mid_save += saving()
        check()
    return killed_mid_save

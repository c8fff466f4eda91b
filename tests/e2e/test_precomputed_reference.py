"""`reference: precomputed` through `lit_align fit`: two DDP processes (gloo, CPU) share the pass and write each
split's cache once; the values are the single-process ones; a restart reuses the files."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from lit_align.data.datamodule import AlignDataModule, DataSource
from lit_align.models.loading import load_causal_lm
from lit_align.models.token_logps import token_logps
from lit_align.modules.reference_cache import load_reference_logps
from lit_align.tensorboard import read_scalars

from ..conftest import DEMO_DATA, ROOT, TINY_MODEL

pytestmark = pytest.mark.slow
VAL_EXAMPLES = 16


def _fit(save_dir: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "lit_align", "fit", "--config", str(ROOT / "configs/quickstart/dpo.yaml"), *overrides,
        "--model.init_args.reference=precomputed", f"--model.init_args.reference_cache_dir={cache}",
        "--data.train=[{path: assets/demo/dpo_val.jsonl, format: preference}]",
        f"--data.max_val_examples={VAL_EXAMPLES}", "--data.eval_batch_size=4",
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", f"--trainer.logger.init_args.save_dir={save_dir}",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_ddp_computes_each_split_once_and_a_restart_reuses_it(tmp_path):
    cache = tmp_path / "cache"
    ddp = ("--config", str(ROOT / "configs/strategy/ddp.yaml"), "--trainer.accelerator=cpu", "--trainer.devices=2")
    result = _fit(tmp_path / "ddp", cache, *ddp)
    output = result.stdout + result.stderr
    assert output.count("reference log-probs [train]: computed 200") == 1
    assert output.count(f"reference log-probs [val]: computed {VAL_EXAMPLES}") == 1
    files = sorted(cache.iterdir())
    assert len(files) == 2 and all(f.name.startswith("ref_logps-") and f.suffix == ".safetensors" for f in files)

    # Each rank validated its own half with the values its half of the pass produced: rewards exactly 0 at step 0.
    scalars = read_scalars(next((tmp_path / "ddp").glob("*/version_*")))
    assert scalars["val/loss"][0] == (0, pytest.approx(math.log(2), abs=1e-6))
    assert scalars["val/rewards/accuracies"][0] == (0, 0.0)

    # The gathered validation table holds the single-process values, in example order.
    data = AlignDataModule(
        [DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        val=[DataSource(str(DEMO_DATA / "dpo_val.jsonl"))],
        tokenizer=str(TINY_MODEL),
        task="preference",
        max_length=256,
        max_val_examples=VAL_EXAMPLES,
        eval_batch_size=VAL_EXAMPLES,
    )
    data.setup()
    model = load_causal_lm(str(TINY_MODEL)).eval()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = token_logps(logits, batch.labels)[0].sum(-1).reshape(2, -1).T
    tables = [load_reference_logps(f, VAL_EXAMPLES) for f in files]
    (table,) = [t for t in tables if t is not None]
    assert_close(table, expected, rtol=1e-6, atol=1e-4)

    # A single-process restart on the same data and weights reuses both files.
    restart = _fit(tmp_path / "single", cache, "--trainer.accelerator=cpu")
    output = restart.stdout + restart.stderr
    # (not "computed" alone: the model summary names the reference, PrecomputedReference)
    assert output.count("reused") == 2 and "]: computed" not in output
    assert sorted(cache.iterdir()) == files

"""End to end: the information-fusion β-DPO recipe through `lit_align fit`, as a user runs it, for a few steps."""

import math

import pytest

from lit_align.cli import main
from lit_align.tensorboard import read_scalars

from ..conftest import ROOT

RECIPE = ROOT / "configs" / "beta_dpo" / "fusion_quickstart.yaml"
SIGNALS = ("fixed", "batch", "margin")


@pytest.mark.slow
def test_fusion_quickstart_logs_every_signal(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe's relative paths
    monkeypatch.setattr("sys.argv", ["lit_align"])
    main(
        [
            "fit",
            "--config", str(RECIPE),
            "--trainer.max_steps", "4",
            "--trainer.val_check_interval", "2",
            "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false",
            "--data.max_val_examples", "16",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )  # fmt: skip
    scalars = read_scalars(next(tmp_path.glob("quickstart-fusion-beta/version_*")))
    for name in SIGNALS:
        for metric in ("value", "weight"):
            values = [v for _, v in scalars[f"train/beta/fusion/{name}/{metric}"]]
            assert len(values) == 4 and all(math.isfinite(v) for v in values), (name, metric, values)
        # equal weights over three signals
        assert scalars[f"train/beta/fusion/{name}/weight"][-1][1] == pytest.approx(1 / 3)
    assert "train/beta/fusion/margin/margin/ema_std" in scalars
    assert "train/beta/fusion/batch/filter/kept_fraction" in scalars
    # step 0: policy == reference, every margin 0, so every signal proposes β0 and the loss is log 2
    assert scalars["train/beta/used"][0][1] == pytest.approx(0.1)
    assert scalars["train/loss"][0][1] == pytest.approx(math.log(2), abs=1e-5)
    # the batch signal keeps floor(0.8 · 16) = 12 of 16 pairs, the others every pair: 0.75 train together
    assert scalars["train/filter/kept_fraction"][-1][1] == pytest.approx(0.75)
    # β moves once the margins do; validation uses β0 alone (DPO's loss)
    assert any(abs(v - 0.1) > 1e-4 for _, v in scalars["train/beta/used"][1:])
    assert scalars["train/beta/used_std"][-1][1] > 0  # one β per pair
    assert all(v == pytest.approx(0.1) for _, v in scalars["val/beta/used"])

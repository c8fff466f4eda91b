"""Several validation sets at once: the first logs under `val/`, the others under `val_<name>/`."""

import pytest

from lit_align.cli import main
from lit_align.tensorboard import read_scalars

from ..conftest import DEMO_DATA, ROOT


@pytest.mark.slow
@pytest.mark.parametrize("task", ["sft", "dpo"])
def test_each_validation_set_is_logged_under_its_own_name(task, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lit_align"])
    second = tmp_path / "second.jsonl"
    second.write_text("".join((DEMO_DATA / f"{task}_train.jsonl").open(encoding="utf-8").readlines()[:12]))
    val = f'[{{"path": "assets/demo/{task}_val.jsonl"}}, {{"path": "{second}", "name": "extra"}}]'
    main(
        [
            "fit", "--config", f"configs/quickstart/{task}.yaml", "--trainer.callbacks=[]",
            "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.enable_progress_bar=false",
            f"--data.val={val}", "--data.separate_val_sets=true",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )  # fmt: skip
    scalars = read_scalars(next(tmp_path.glob("quickstart-*/version_*")))
    metric = "rewards/accuracies" if task == "dpo" else "ppl"
    # validate_before_training (step 0) and the validation at step 3, for both sets
    assert [step for step, _ in scalars[f"val/{metric}"]] == [0, 2]
    assert [step for step, _ in scalars[f"val_extra/{metric}"]] == [0, 2]
    assert scalars["val/loss"][-1][1] != scalars["val_extra/loss"][-1][1]
    assert not [tag for tag in scalars if "dataloader_idx" in tag]

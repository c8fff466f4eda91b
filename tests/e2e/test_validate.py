"""End to end: ``lit_align validate --ckpt_path <run>/checkpoints/last.ckpt --data.val <held-out file>`` for every
preference algorithm's quickstart, as a user types it.

Per algorithm: a short ``fit`` makes a checkpoint, then ``validate`` scores a held-out file in another format
(LLaMA-Factory's ShareGPT pairs, read by ``format: auto``) given as a plain path. The printed table must show
``val/rewards/accuracies`` and ``val/rewards/margins``, equal to the logged values and to the same metrics computed
here directly from the module with the checkpoint's weights on that file, and unlike the untrained model's.
"""

import json
import os
import re

import pytest
import torch

import lit_align.cli as cli_module
from lit_align.cli import AlignCLI, instantiate, main
from lit_align.tensorboard import read_scalars

from ..conftest import DEMO_DATA, ROOT, SHARED_DATA, TINY_MODEL

pytestmark = pytest.mark.slow

RECIPES = {
    "dpo": "configs/quickstart/dpo.yaml",
    "beta_dpo": "configs/beta_dpo/quickstart.yaml",
    "orpo": "configs/orpo/quickstart.yaml",
    "preference_guided": "configs/preference_guided/quickstart.yaml",
    "preference_guided_embedding": "configs/preference_guided/quickstart_embedding.yaml",
}
REFERENCE_FREE = {"orpo"}
HELD_OUT_PAIRS = 12
HELD_OUT_LENGTH = "--data.max_length=384"  # every pair whole, with preference-guided's instruction too
PRINTED_METRIC = re.compile(r"(val/[\w/]+)\W+?(-?\d[\d.]*(?:e[+-]?\d+)?)\b")


def _held_out(tmp_path):
    """The shortest LLaMA-Factory DPO pairs; some are longer than the recipes' 256 tokens (`HELD_OUT_LENGTH`)."""
    lines = (SHARED_DATA / "llamafactory_dpo_en_demo.train.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "held_out.jsonl"
    path.write_text("\n".join(sorted(lines, key=len)[:HELD_OUT_PAIRS]) + "\n", encoding="utf-8")
    return path


def _recipe_args(algorithm: str, tmp_path) -> list[str]:
    """The recipe, with a 32-pair training file (setup tokenises it in every run), small batches (the test's time
    goes into forward and backward passes) and no sample generation."""
    train = tmp_path / "train.jsonl"
    if not train.exists():
        rows = (DEMO_DATA / "dpo_train.jsonl").read_text(encoding="utf-8").splitlines()[:32]
        train.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = [
        "--config", str(ROOT / RECIPES[algorithm]), "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
        f"--data.train=[{{path: {train}}}]", "--data.batch_size=4", "--data.eval_batch_size=8",
    ]  # fmt: skip
    if algorithm == "preference_guided_embedding":
        soft_prompt = tmp_path / "soft_prompt.pt"
        hidden_size = json.loads((TINY_MODEL / "config.json").read_text())["hidden_size"]
        torch.save(torch.randn(8, hidden_size, generator=torch.Generator().manual_seed(0)) * 0.02, soft_prompt)
        args.append(f"--model.init_args.soft_prompt_path={soft_prompt}")
    return args


def _run(subcommand: str, args: list[str], monkeypatch) -> AlignCLI:
    """`main`, the `lit_align` command, in this process; returns the CLI it built (for its trainer and data)."""
    built = []

    class RecordingCLI(AlignCLI):
        def __init__(self, *a, **k) -> None:
            built.append(self)
            super().__init__(*a, **k)

    with monkeypatch.context() as patch:
        patch.setattr(cli_module, "AlignCLI", RecordingCLI)
        main([subcommand, *args])  # an error would exit (SystemExit) or raise: returning is exit status 0
    return built[0]


def _direct_metrics(args: list[str], held_out, checkpoint) -> tuple[dict[str, float], dict[str, float]]:
    """The loss's metrics over every held-out pair in one batch, from the module the recipe builds: as it starts
    (untrained), then with the checkpoint's trained weights (LoRA adapter, soft prompt, loss state) loaded."""
    cli = instantiate([*args, f"--data.val={held_out}", HELD_OUT_LENGTH, f"--data.eval_batch_size={HELD_OUT_PAIRS}"])
    module, data = cli.model, cli.datamodule
    data.setup("validate")
    module.configure_model()
    module.eval()
    batch = next(iter(data.examples_dataloader(data.split_examples("val"))))
    results = []
    for state in (None, torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]):
        if state is not None:
            missing, unexpected = module.load_state_dict(state, strict=False)
            assert not unexpected and all(name not in state for name in missing)
        with torch.no_grad():
            _, metrics = module.loss(module.compute_logps(batch))
        results.append({name: float(value) for name, value in metrics.items()})
    return results[0], results[1]


@pytest.mark.parametrize("algorithm", list(RECIPES))
def test_validate_scores_a_checkpoint_on_a_held_out_file(algorithm, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = _recipe_args(algorithm, tmp_path)
    fit_logs = tmp_path / "fit"
    _run(
        "fit",
        [*args, "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
         "--validate_before_training=false", f"--trainer.logger.init_args.save_dir={fit_logs}"],
        monkeypatch,
    )  # fmt: skip
    run = next(fit_logs.glob("*/version_0"))
    assert os.readlink(run.parent / "latest") == "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"
    held_out = _held_out(tmp_path)
    capsys.readouterr()

    cli = _run(
        "validate",
        [*args, f"--ckpt_path={checkpoint}", f"--data.val={held_out}", HELD_OUT_LENGTH,
         f"--trainer.logger.init_args.save_dir={fit_logs}"],
        monkeypatch,
    )  # fmt: skip
    printed = {name: float(value) for name, value in PRINTED_METRIC.findall(capsys.readouterr().out)}
    assert {"val/rewards/accuracies", "val/rewards/margins"} <= set(printed), printed

    # Validating logs to a new run folder, but `latest` stays at the training run (with its checkpoints and hf/).
    assert os.readlink(run.parent / "latest") == "version_0"

    # The held-out file replaced the recipe's validation set; it was not added to it.
    assert [report.name for report in cli.datamodule.val_data.reports] == ["held_out"]
    pairs = len(cli.datamodule.val_data.examples)
    assert pairs == HELD_OUT_PAIRS  # validation batches of 8 and 4: the printed values are their weighted mean

    # Printed = returned by trainer.validate (its callback metrics) = logged to TensorBoard.
    logged = read_scalars(run.parent / "version_1")
    for name in ("val/rewards/accuracies", "val/rewards/margins", "val/loss"):
        assert printed[name] == cli.trainer.callback_metrics[name].item() == logged[name][-1][1], name

    # The same numbers come out of the module with the checkpoint's weights on the held-out pairs in one batch;
    # the untrained model's differ.
    untrained, trained = _direct_metrics(args, held_out, checkpoint)
    for name in ("rewards/accuracies", "rewards/margins"):
        assert printed[f"val/{name}"] == pytest.approx(trained[name], rel=1e-4, abs=1e-6), name
    assert trained["rewards/margins"] != pytest.approx(untrained["rewards/margins"], abs=1e-4)
    if algorithm not in REFERENCE_FREE:
        # Untrained, the policy is the reference: every reward is 0, so no pair is ranked right (strictly).
        assert untrained["rewards/margins"] == 0.0 and untrained["rewards/accuracies"] == 0.0
        assert printed["val/rewards/accuracies"] > 0.0

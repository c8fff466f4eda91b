import math

import pytest
import torch

from lit_align.optim import LRSchedule, lr_factor, parameter_groups


def test_cosine_with_warmup_by_hand():
    # total 100, warmup 10: warmup step k gives (k + 1) / 10; after warmup p = (step - 10) / 90
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(4, 100, 10) == pytest.approx(0.5)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)  # p = 0.5, 0.5 * (1 + cos(pi / 2))
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)
    assert lr_factor(100, 100, 10, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_linear_and_constant():
    assert lr_factor(55, 100, 10, kind="linear") == pytest.approx(0.5)
    assert lr_factor(70, 100, 10, kind="constant") == 1.0
    with pytest.raises(ValueError, match="kind"):
        lr_factor(50, 100, 0, kind="exp")


def test_warmup_ratio_rounds_up():
    assert LRSchedule(warmup_ratio=0.05).warmup_for(90) == math.ceil(4.5)
    assert LRSchedule(warmup_steps=3, warmup_ratio=0.5).warmup_for(90) == 3


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model[0].bias.requires_grad_(False)
    groups = parameter_groups(model)
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([4, 4])]
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 2  # LayerNorm weight and bias


def test_empty_groups_are_left_out():
    lora_like = torch.nn.Sequential(torch.nn.Linear(4, 2, bias=False), torch.nn.Linear(2, 4, bias=False))
    assert [len(g["params"]) for g in parameter_groups(lora_like)] == [2]
    norms_only = torch.nn.LayerNorm(4)
    groups = parameter_groups(norms_only)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_zero3_partitioned_weights_keep_their_decay():
    # DeepSpeed ZeRO-3 leaves a parameter as an empty 1-D slice and records its real shape in ds_shape.
    linear = torch.nn.Linear(4, 4, bias=False)
    linear.weight.data = torch.empty(0)
    linear.weight.ds_shape = torch.Size([4, 4])
    groups = parameter_groups(linear)
    assert len(groups) == 1 and "weight_decay" not in groups[0]

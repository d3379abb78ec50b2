"""Learning-rate schedules of the three stages and TrainConfig."""

from __future__ import annotations

import math

import pytest
import torch

from csdn.train import TrainConfig, learning_rate
from csdn.train.schedule import apply_learning_rate


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, 3e-6),
        (5, 3e-4 * (0.01 * 0.5 + 0.5)),
        (10, 3e-4),
        (39, 3e-4),
        (40, 3e-5),
        (69, 3e-5),
        (70, 3e-6),
        (119, 3e-6),
    ],
)
def test_stage3_warmup_then_steps(epoch, expected):
    assert learning_rate(3, epoch, TrainConfig()) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("stage", [1, 2])
def test_stage1_and_2_warm_up_then_cosine_to_the_floor(stage):
    config = TrainConfig()
    assert learning_rate(stage, 0, config) == pytest.approx(1e-5)
    # linear warm-up 1e-5 -> 3e-4 over 5 epochs
    assert learning_rate(stage, 2, config) == pytest.approx(1e-5 + 2 * (3e-4 - 1e-5) / 5)
    # cosine over the 60-epoch cycle, counted from epoch 0
    assert learning_rate(stage, 30, config) == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6))
    assert learning_rate(stage, 5, config) == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi / 12)))
    rates = [learning_rate(stage, e, config) for e in range(5, 61)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    for epoch in (60, 61, 200):
        assert learning_rate(stage, epoch, config) == pytest.approx(1e-6)


def test_schedules_follow_the_config():
    config = TrainConfig(
        stage1_epochs=10, stage2_lr=1e-3, warmup_epochs=0, stage3_lr=1e-2, milestones=(2,), stage3_warmup_epochs=0
    )
    assert learning_rate(1, 0, config) == pytest.approx(3e-4)
    assert learning_rate(1, 10, config) == pytest.approx(1e-6)
    assert learning_rate(2, 0, config) == pytest.approx(1e-3)
    assert [learning_rate(3, e, config) for e in (0, 1, 2)] == pytest.approx([1e-2, 1e-2, 1e-3])


def test_learning_rate_rejects_unknown_stage_or_negative_epoch():
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        learning_rate(4, 0)
    with pytest.raises(ValueError, match="epoch"):
        learning_rate(1, -1)


def test_head_group_runs_at_twice_the_base_rate():
    weight, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [weight]}, {"params": [head], "lr_factor": 2.0}], lr=0.0)
    base = apply_learning_rate(optimizer, 3, 10, TrainConfig())
    assert base == pytest.approx(3e-4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([3e-4, 6e-4])


def test_train_config_round_trip_and_validation():
    config = TrainConfig(stage3_epochs=0, milestones=(5, 9), visible_i2t_weight=0.0)
    again = TrainConfig.from_dict(config.to_dict())
    assert again == config and not config.differences(again)
    assert TrainConfig().differences(config) == [
        "stage3_epochs: 120 -> 0",
        "milestones: [40, 70] -> [5, 9]",
        "visible_i2t_weight: 0.05 -> 0.0",
    ]
    for bad, match in [
        ({"images_per_id": 1}, "images_per_id"),
        ({"stage1_lr": -1.0}, "stage1_lr"),
        ({"milestones": (70, 40)}, "milestones"),
        ({"precision": "fp8"}, "precision"),
        ({"flip_prob": 1.5}, "flip_prob"),
        (
            {"id_weight": 0, "msel_weight": 0, "triplet_weight": 0, "visible_i2t_weight": 0, "infrared_i2t_weight": 0},
            "stage 3 would not train",
        ),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"lr": 1.0})


def test_a_shortened_stage3_scales_warmup_and_milestones_and_reaches_its_base_rate():
    from csdn.train.schedule import schedule_note

    config = TrainConfig(stage3_epochs=12)  # a tenth of the paper's 120: warm-up 1, drops at 4 and 7
    rates = [learning_rate(3, e, config) for e in range(12)]
    assert rates[1] == pytest.approx(3e-4) and rates[4] == pytest.approx(3e-5) and rates[7] == pytest.approx(3e-6)
    assert "warm-up 10 -> 1 epochs" in schedule_note(3, config) and "[40, 70] -> [4, 7]" in schedule_note(3, config)
    full = TrainConfig()
    assert schedule_note(3, full) is None and learning_rate(3, 40, full) == pytest.approx(
        3e-5
    )  # absolute at full length
    assert (
        learning_rate(3, 1, TrainConfig(stage3_epochs=12, scale_schedule=False)) < 3e-4
    )  # the old behaviour, asked for


@pytest.mark.parametrize("stage", [1, 2])
def test_a_shortened_stage1_or_2_scales_its_warmup(stage):
    config = TrainConfig(**{f"stage{stage}_epochs": 6})  # 5 of 60 warm-up epochs -> 1 of 6 (rounded, at least 1)
    assert learning_rate(stage, 0, config) == pytest.approx(1e-5)
    assert learning_rate(stage, 1, config) == pytest.approx(1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi / 6)))


def test_a_very_short_stage_still_trains_at_its_base_rate():
    two = TrainConfig(stage3_epochs=2)  # warm-up 1 epoch, both drops after the end
    assert [learning_rate(3, e, two) for e in range(2)] == pytest.approx([3e-6, 3e-4])
    assert learning_rate(1, 0, TrainConfig(stage1_epochs=1)) == pytest.approx(3e-4)  # no room for a warm-up

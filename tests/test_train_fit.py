"""csdn.train.fit end to end on a tiny model and synthetic identities: what each stage trains,
that training helps, logging and checkpoints, and bit-identical resumption after a kill."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
from _train_synthetic import cross_modality_map, write_identities

import csdn
import csdn.train.trainer as trainer_module
from csdn import CSDN, CSDNConfig
from csdn.train import TrainConfig, fit
from csdn.train.checkpoint import load_checkpoint
from csdn.train.runlog import read_log
from csdn.train.stages import image_step

FAST = dict(
    ids_per_batch=4,
    images_per_id=4,
    stage1_batch_size=16,
    stage2_batch_size=32,
    warmup_epochs=0,
    stage1_lr=1e-2,
    stage2_lr=1e-2,
    stage3_warmup_epochs=0,
    milestones=(),
    stage3_lr=1e-3,
)
END_TO_END = TrainConfig(stage1_epochs=3, stage2_epochs=3, stage3_epochs=6, **FAST)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    return {
        "train": write_identities(root / "train", range(10), per_modality=6),
        "test": write_identities(root / "test", range(100, 106), per_modality=4, seed=1),
    }


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory) -> dict:
    """One uninterrupted end-to-end run, shared by the tests that inspect or reproduce it."""
    output = tmp_path_factory.mktemp("reference")
    torch.manual_seed(END_TO_END.seed)
    untrained = CSDN(CSDNConfig.tiny(num_classes=10)).eval()  # the very model fit() starts from
    model = fit(
        data["train"],
        END_TO_END,
        output_dir=output,
        init="tiny",
        progress=False,
        validate=lambda m: {"mAP": cross_modality_map(m, data["test"])},
    )
    return {"output": output, "model": model, "untrained_map": cross_modality_map(untrained, data["test"])}


def _state(model: CSDN) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: CSDN) -> set[str]:
    return {name for name, tensor in model.state_dict().items() if not torch.equal(tensor, before[name])}


def _train_one_stage(data, tmp_path, stage: int, **overrides) -> tuple[dict[str, torch.Tensor], CSDN]:
    epochs = {f"stage{s}_epochs": int(s == stage) for s in (1, 2, 3)}
    config = TrainConfig(**{**FAST, **epochs, "steps_per_epoch": 1, **overrides})
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny(num_classes=10))
    before = _state(model)
    fit(data["train"], config, output_dir=tmp_path, init=model, progress=False)
    return before, model


# ---------------------------------------------------------------------------- what each stage trains
def test_stage1_trains_only_the_prompts(data, tmp_path):
    before, model = _train_one_stage(data, tmp_path, 1)
    assert _changed(before, model) == {"prompt_visible.cls_ctx", "prompt_infrared.cls_ctx"}


@pytest.mark.parametrize("recipe", ["reference", "clean"])
def test_stage2_trains_only_the_fusion_module(data, tmp_path, recipe):
    before, model = _train_one_stage(data, tmp_path, 2, recipe=recipe)
    fusion = {f"fusion.{name}" for name, _ in model.fusion.named_parameters()}
    changed = _changed(before, model)
    if recipe == "clean":  # features extracted in eval mode: no statistic moves
        assert changed == fusion
        return
    # the authors extract stage-2 features in train mode: the image side's BatchNorm
    # running statistics move (and only theirs), its weights do not
    image_statistics = {
        name
        for name, _ in model.named_buffers()
        if name.startswith(("stem_", "trunk."))
        and name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    assert changed == fusion | image_statistics


def test_stage3_trains_everything_but_prompts_text_and_fusion(data, tmp_path):
    # two steps: residual branches start as identities (zeroed last BatchNorm), so
    # the first step cannot reach the biases inside them yet
    before, model = _train_one_stage(data, tmp_path, 3, steps_per_epoch=2)
    changed = _changed(before, model)
    untouched = ("prompt_visible.", "prompt_infrared.", "text_encoder.", "fusion.")
    assert not {name for name in changed if name.startswith(untouched)}
    image_side = {id(p) for p in [*model.image_parameters(), *model.head_parameters()]}
    trainable = {name for name, p in model.named_parameters() if id(p) in image_side and p.requires_grad}
    assert trainable and trainable <= changed
    assert {name for name, _ in model.named_parameters()} - changed == {
        name for name, p in model.named_parameters() if name.startswith(untouched) or not p.requires_grad
    }


def test_stage3_image_to_text_losses_can_be_switched_off(data):
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny(num_classes=4)).train()
    batch = {key: torch.randn(8, 3, 64, 32) for key in ("visible", "exchange", "infrared")}
    batch["labels"] = torch.tensor([0, 0, 0, 0, 3, 3, 3, 3])
    text = torch.randn(4, 32)
    full = image_step(model, batch, text, TrainConfig(), contextlib.nullcontext)  # MSEL is in the default
    assert set(full) == {"loss", "id", "msel", "triplet", "i2t_visible", "i2t_infrared"}
    expected = (
        full["id"] + full["msel"] + 0.15 * full["triplet"] + 0.05 * full["i2t_visible"] + 0.1 * full["i2t_infrared"]
    )
    assert torch.allclose(full["loss"], expected)
    ablation = TrainConfig(visible_i2t_weight=0.0, infrared_i2t_weight=0.0, msel_weight=0.0)
    reduced = image_step(model, batch, text, ablation, contextlib.nullcontext)
    assert set(reduced) == {"loss", "id", "triplet"}
    assert torch.allclose(reduced["loss"], reduced["id"] + 0.15 * reduced["triplet"])


# ---------------------------------------------------------------------------- end to end
def _epoch_losses(records: list[dict], stage: int) -> list[float]:
    return [r["loss"] for r in records if r["event"] == "epoch" and r["stage"] == stage]


def test_fit_lowers_the_losses_and_raises_cross_modality_map(data, reference_run):
    records = read_log(reference_run["output"] / "log.jsonl")
    for stage in (1, 2, 3):
        losses = _epoch_losses(records, stage)
        assert len(losses) == END_TO_END.epochs(stage)
        assert losses[-1] < losses[0], f"stage {stage} losses did not fall: {losses}"
    trained_map = cross_modality_map(reference_run["model"], data["test"])
    assert trained_map == pytest.approx([r for r in records if r["event"] == "validation"][-1]["mAP"])
    assert trained_map > reference_run["untrained_map"] + 0.05, (trained_map, reference_run["untrained_map"])


def test_fit_logs_checkpoints_and_saves_the_final_model(reference_run):
    output, model = reference_run["output"], reference_run["model"]
    records = read_log(output / "log.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    assert {r["stage"] for r in steps} == {1, 2, 3}
    assert all("lr" in r and "loss" in r for r in steps)
    assert {"id", "msel", "triplet", "i2t_visible", "i2t_infrared"} <= set(steps[-1])
    evals = [r for r in records if r["event"] == "validation"]
    assert len(evals) == END_TO_END.stage3_epochs
    summary = json.loads((output / "summary.json").read_text())
    assert summary["finished"] and summary["best"]["value"] == max(r["mAP"] for r in evals)
    last = load_checkpoint(output / "checkpoints" / "last.pt")
    best = load_checkpoint(output / "checkpoints" / "best.pt")
    assert (last["stage"], last["epoch"]) == (3, 6)
    assert best["epoch"] == summary["best"]["epoch"] + 1
    assert TrainConfig.from_dict(json.loads((output / "train_config.json").read_text())) == END_TO_END
    best_model = csdn.load(output / "best")
    assert best_model.provenance["training"]["best"]["epoch"] == summary["best"]["epoch"]
    assert all(torch.equal(best_model.state_dict()[name], tensor) for name, tensor in best["model"].items())
    loaded = csdn.load(output / "model")
    assert loaded.provenance["training"]["epochs"] == [3, 3, 6]
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert not model.training and all(p.requires_grad for p in model.parameters())


def test_resume_after_a_kill_mid_stage_ends_bit_identical(data, reference_run, tmp_path, monkeypatch):
    calls = {"n": 0}

    def killed_mid_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:  # stage 3, epoch 2, step 1 (60 // 16 + 1 = 4 steps per epoch)
            raise KeyboardInterrupt
        return image_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "image_step", killed_mid_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(data["train"], END_TO_END, output_dir=tmp_path, init="tiny", progress=False)
    monkeypatch.undo()
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (last["stage"], last["epoch"]) == (3, 2)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(data["train"], END_TO_END, output_dir=tmp_path, init="tiny", progress=False)
    with pytest.raises(ValueError, match="stage3_lr"):
        fit(
            data["train"],
            TrainConfig(**{**END_TO_END.to_dict(), "stage3_lr": 0.1}),
            output_dir=tmp_path,
            init="tiny",
            resume=True,
            progress=False,
        )
    resumed = fit(data["train"], None, output_dir=tmp_path, init="tiny", resume=True, progress=False)
    reference = reference_run["model"].state_dict()
    mismatched = [name for name, tensor in resumed.state_dict().items() if not torch.equal(tensor, reference[name])]
    assert not mismatched
    starts = [r for r in read_log(tmp_path / "log.jsonl") if r["event"] == "start"]
    assert starts[-1]["resumed_from"] == {"stage": 3, "epoch": 2}

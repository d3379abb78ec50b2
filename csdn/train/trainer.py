"""``csdn.train.fit``: the three CSDN training stages, resumable, on one process or many."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from csdn.config import CSDNConfig
from csdn.model import CSDN
from csdn.train import distributed as ddp
from csdn.train.augment import TrainAugment
from csdn.fileio import atomic_write_text
from csdn.train.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from csdn.train.config import TrainConfig
from csdn.train.data import TrainImages, resolve_train_set
from csdn.train.initialise import Init, initial_model
from csdn.train.loader import plain_view_batches, stage3_batches
from csdn.train.runlog import RunLog
from csdn.train.sampler import (IdentitySampler, epoch_rng, feature_batches, feature_steps, paired_batches,
                                 seed_torch_for_epoch)
from csdn.train.schedule import apply_learning_rate
from csdn.train.stages import (STAGE_NAMES, Losses, autocast_factory, fusion_step, image_step, make_optimizer,
                                prompt_step)

Evaluator = Callable[[CSDN], Mapping[str, float]]


def _resolve_device(device: str | torch.device | None, world: ddp.World) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but this torch build sees no CUDA device")
        if world.active and device.index is None:
            device = torch.device("cuda", world.local_rank)
    return device


class _Trainer:
    """One training run: owns the model, the data plans, the log and the checkpoints."""

    def __init__(self, model: CSDN, train_set: TrainImages, config: TrainConfig, output: Path, world: ddp.World,
                 device: torch.device, frozen: set[str], *, evaluate: Evaluator | None, eval_every: int,
                 best_metric: str, num_workers: int, progress: bool):
        self.model, self.train_set, self.config, self.world, self.device = model, train_set, config, world, device
        self.output = output
        self.frozen_names = frozen
        self.frozen = {id(p) for name, p in model.named_parameters() if name in frozen}
        self.evaluate, self.eval_every, self.best_metric = evaluate, eval_every, best_metric
        self.num_workers, self.progress = num_workers, progress and world.is_main
        self.augment = TrainAugment(model.config, config)
        self.autocast = autocast_factory(config.precision, device)
        self.log = RunLog(output / "log.jsonl", enabled=world.is_main)
        self.best: dict[str, Any] | None = None
        self.best_is_new = False
        self.text: torch.Tensor | None = None  # stage 3's fixed classifier
        self.epoch_means: dict[int, dict[str, float]] = {}
        self._image_features: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ fixed features
    @torch.no_grad()
    def _project(self, images: list[Any], modality: str) -> torch.Tensor:
        """Image projections of ``images`` (frozen model, eval mode); ranks share the work."""
        self.model.eval()
        rows = list(range(self.world.rank, len(images), self.world.size))
        out = torch.zeros(len(images), self.model.config.embed_dim, device=self.device)
        batches = plain_view_batches([images[i] for i in rows], self.augment, self.config.feature_batch_size,
                                     num_workers=self.num_workers)
        done = 0
        for batch in tqdm(batches, desc=f"extracting {modality} features", disable=not self.progress, leave=False):
            with self.autocast():
                projection = self.model.image_projection(batch.to(self.device), modality)
            out[rows[done:done + len(batch)]] = projection.float()
            done += len(batch)
        return ddp.sum_across_ranks(out, self.world)

    def image_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible and infrared projections of every training image, extracted once for stages 1 and 2."""
        if self._image_features is None:
            ts = self.train_set
            self._image_features = (self._project(ts.visible_images, "visible"),
                                    self._project(ts.infrared_images, "infrared"))
        return self._image_features

    @torch.no_grad()
    def fused_text(self) -> torch.Tensor:
        """Fused text features of every identity: the fixed classifier of stage 3."""
        self.model.eval()
        labels = torch.arange(self.train_set.num_classes, device=self.device)
        chunks = labels.split(self.config.feature_batch_size)
        return torch.cat([self.model.fused_text_features(chunk).float() for chunk in chunks])

    # ------------------------------------------------------------------ per-stage step sources
    # Each returns (items, compute, steps, images per step): ``compute(item)`` is one step's losses.
    def _prompt_steps(self, epoch: int) -> tuple[Iterable[Any], Callable[[Any], Losses], int, int]:
        cfg, ts, world, dev = self.config, self.train_set, self.world, self.device
        vis, ir = self.image_features()
        vis_labels = torch.from_numpy(ts.visible_labels).to(dev)
        ir_labels = torch.from_numpy(ts.infrared_labels).to(dev)
        steps = feature_steps(len(vis), cfg.stage1_batch_size, world.size)
        items = paired_batches(epoch_rng(cfg.seed, 1, epoch), ts.visible_labels, ts.infrared_labels,
                               cfg.stage1_batch_size, steps, world_size=world.size, rank=world.rank)

        def compute(item):
            v, i = (torch.from_numpy(index).to(dev) for index in item)
            return prompt_step(self.model, vis[v], vis_labels[v], ir[i], ir_labels[i])

        return items, compute, steps, 2 * cfg.stage1_batch_size

    def _fusion_steps(self, epoch: int) -> tuple[Iterable[Any], Callable[[Any], Losses], int, int]:
        cfg, ts, world, dev = self.config, self.train_set, self.world, self.device
        features = torch.cat(self.image_features())
        labels = torch.from_numpy(np.concatenate([ts.visible_labels, ts.infrared_labels])).to(dev)
        steps = feature_steps(len(features), cfg.stage2_batch_size, world.size)
        items = feature_batches(epoch_rng(cfg.seed, 2, epoch), len(features), cfg.stage2_batch_size, steps,
                                world_size=world.size, rank=world.rank)

        def compute(item):
            index = torch.from_numpy(item).to(dev)
            return fusion_step(self.model, features[index], labels[index])

        return items, compute, steps, cfg.stage2_batch_size

    def _image_steps(self, epoch: int) -> tuple[Iterable[Any], Callable[[Any], Losses], int, int]:
        cfg, world, dev = self.config, self.world, self.device
        sampler = IdentitySampler(self.train_set, cfg.ids_per_batch, cfg.images_per_id, seed=cfg.seed,
                                  world_size=world.size, steps_per_epoch=cfg.steps_per_epoch)
        plan = sampler.epoch(epoch, world.rank)
        items = stage3_batches(self.train_set, plan, self.augment, seed=cfg.seed, epoch=epoch, rank=world.rank,
                               num_workers=self.num_workers)

        def compute(batch):
            batch = {key: value.to(dev, non_blocking=True) for key, value in batch.items()}
            return image_step(self.model, batch, self.text, cfg, self.autocast)

        return items, compute, len(plan), 3 * cfg.ids_per_batch * cfg.images_per_id

    def _set_modes(self, stage: int) -> None:
        if stage == 3:
            self.model.train()
        else:  # frozen image model: BatchNorm statistics must not move
            self.model.eval()
            self.model.fusion.train(stage == 2)

    # ------------------------------------------------------------------ training
    def _epoch(self, stage: int, epoch: int, optimizer: torch.optim.Optimizer, scaler) -> dict[str, float]:
        cfg = self.config
        lr = apply_learning_rate(optimizer, stage, epoch, cfg)
        seed_torch_for_epoch(cfg.seed, stage, epoch, self.world.rank)
        source = (self._prompt_steps, self._fusion_steps, self._image_steps)[stage - 1]
        items, compute, steps, per_step = source(epoch)  # may extract features (eval mode) first
        self._set_modes(stage)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        totals: dict[str, float] = {}
        started = time.perf_counter()
        bar = tqdm(total=steps, desc=f"stage {stage} ({STAGE_NAMES[stage]}) epoch {epoch + 1}/{cfg.epochs(stage)}",
                   disable=not self.progress, unit="step")
        for step, item in enumerate(items):
            losses = compute(item)
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(losses["loss"]) if scaler else losses["loss"]).backward()
            ddp.average_gradients(params, self.world)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            names = list(losses)
            step_means = ddp.mean_across_ranks(torch.stack([losses[n].detach().float() for n in names]), self.world)
            values = dict(zip(names, step_means.tolist()))
            if not math.isfinite(values["loss"]) and scaler is None:
                raise FloatingPointError(
                    f"stage {stage} epoch {epoch} step {step}: the loss is {values['loss']}; lower the "
                    "learning rate or check the input images"
                )
            for name, value in values.items():
                totals[name] = totals.get(name, 0.0) + value
            self.log.write("step", stage=stage, epoch=epoch, step=step, lr=lr, **values)
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            bar.update()
        bar.close()
        seconds = time.perf_counter() - started
        means = {name: total / max(steps, 1) for name, total in totals.items()}
        images_per_second = steps * per_step * self.world.size / max(seconds, 1e-9)
        self.log.write("epoch", stage=stage, epoch=epoch, lr=lr, seconds=round(seconds, 3),
                       images_per_second=round(images_per_second, 2), **means)
        return means

    def _maybe_evaluate(self, stage: int, epoch: int) -> None:
        last = epoch + 1 == self.config.epochs(stage)
        if self.evaluate is None or stage != 3 or not (last or (epoch + 1) % self.eval_every == 0):
            return
        if self.world.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = {name: float(value) for name, value in dict(self.evaluate(self.model)).items()}
            if self.best_metric not in metrics:
                raise ValueError(
                    f"the evaluator returned {sorted(metrics)}, without best_metric={self.best_metric!r}; "
                    "return it or pass best_metric= one of those names"
                )
            self.log.write("eval", stage=stage, epoch=epoch, **metrics)
            if self.best is None or metrics[self.best_metric] > self.best["value"]:
                self.best = {"metric": self.best_metric, "value": metrics[self.best_metric], "stage": stage,
                             "epoch": epoch, "metrics": metrics}
                self.best_is_new = True
        ddp.barrier(self.world)

    def _checkpoint(self, stage: int, done: int, optimizer, scaler) -> None:
        ddp.broadcast_state(self.model, self.world, buffers_only=True)
        if self.world.is_main:
            state = {
                "stage": stage, "epoch": done,
                "model": self.model.state_dict(), "model_config": self.model.config.to_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "scheduler": {"stage": stage, "next_epoch": done},
                "sampler": {"seed": self.config.seed, "stage": stage, "next_epoch": done,
                            "world_size": self.world.size},
                "train_config": self.config.to_dict(), "data": self.train_set.fingerprint(),
                "frozen": sorted(self.frozen_names), "best": self.best,
            }
            directory = self.output / "checkpoints"
            save_checkpoint(state, directory / LAST)
            if self.best_is_new:  # also as a loadable model: csdn.load(output / "best")
                save_checkpoint(state, directory / BEST)
                self.model.save_pretrained(self.output / "best", extra_meta={"training": {"best": self.best}})
                self.best_is_new = False
        ddp.barrier(self.world)

    def run(self, stage: int, done: int, resumed: dict[str, Any] | None, stop_after: int | None) -> bool:
        """Train from (``stage``, ``done`` epochs into it); return True when all stages are complete."""
        trained = 0
        for current in (1, 2, 3):
            epochs = self.config.epochs(current)
            start = done if current == stage else 0
            if current < stage or start >= epochs:
                continue
            optimizer = make_optimizer(self.model, current, self.config, self.frozen)
            scaler = torch.amp.GradScaler("cuda") if self.config.precision == "fp16" else None
            if resumed is not None and current == stage and start > 0:
                optimizer.load_state_dict(resumed["optimizer"])
                if scaler and resumed.get("scaler"):
                    scaler.load_state_dict(resumed["scaler"])
            if current == 3:
                self.text = self.fused_text()
            self.log.write("stage", stage=current, name=STAGE_NAMES[current], start_epoch=start, epochs=epochs)
            for epoch in range(start, epochs):
                if stop_after is not None and trained >= stop_after:
                    return False
                self.epoch_means[current] = self._epoch(current, epoch, optimizer, scaler)
                self._maybe_evaluate(current, epoch)
                self._checkpoint(current, epoch + 1, optimizer, scaler)
                trained += 1
        return True


def _restore_model(init: Init, checkpoint: dict[str, Any]) -> CSDN:
    config = CSDNConfig.from_dict(checkpoint["model_config"])
    model = init if isinstance(init, CSDN) else CSDN(config)
    model.load_state_dict(checkpoint["model"])
    return model


def _check_resume(checkpoint: dict[str, Any], config: TrainConfig, train_set: TrainImages, world: ddp.World,
                  path: Path) -> None:
    changed = TrainConfig.from_dict(checkpoint["train_config"]).differences(config)
    if changed:
        raise ValueError(
            f"cannot resume {path}: the training config differs from the checkpoint's ({'; '.join(changed)}); "
            "resume with the same TrainConfig or start a new output directory"
        )
    if checkpoint["data"] != train_set.fingerprint():
        raise ValueError(
            f"cannot resume {path}: it was trained on {checkpoint['data']} but this training set is "
            f"{train_set.fingerprint()}"
        )
    if checkpoint["sampler"]["world_size"] != world.size:
        warnings.warn(
            f"resuming a run of {checkpoint['sampler']['world_size']} process(es) on {world.size}: "
            "batches will differ from an uninterrupted run", stacklevel=3,
        )


def fit(
    data: Any,
    config: TrainConfig | None = None,
    *,
    output_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    init: Init = "RN50",
    evaluate: Evaluator | None = None,
    eval_every: int = 1,
    best_metric: str = "mAP",
    device: str | torch.device | None = None,
    resume: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    image_size: tuple[int, int] | None = None,
    stop_after: int | None = None,
    dataset_options: Mapping[str, Any] | None = None,
) -> CSDN:
    """Train CSDN's three stages (prompts, SII fusion, image model) and return the model.

    ``data``: a dataset name (``"sysu"``, ``"regdb"``, ``"llcm"``, ``"folder"``) with
    ``root``, a reader such as ``csdn.data.SYSUMM01(root)``, an image folder, or any
    object with ``.visible`` / ``.infrared`` sample lists. ``init``: ``"RN50"``, a
    local CLIP file, ``"tiny"``, a :class:`CSDN` (trained in place) or a saved
    model's path. ``evaluate(model) -> {"mAP": ...}`` runs after every
    ``eval_every``-th stage-3 epoch and the last one; the best by
    ``best_metric`` is kept as ``checkpoints/best.pt`` and as a model in ``best/``.

    Writes ``output_dir/checkpoints/last.pt`` after every epoch, ``log.jsonl``
    (losses and learning rate per step, metrics per evaluation),
    ``train_config.json``, ``summary.json`` and the final model
    (``output_dir/model``, via ``save_pretrained``; load it with ``csdn.load``).
    An output directory that already holds a run is refused unless
    ``resume=True``, which continues from ``last.pt`` (with its saved config when
    ``config`` is None; a fresh start if there is no checkpoint yet) and ends
    with the same weights as an uninterrupted run. ``stop_after`` trains at most
    that many epochs in this call (for time-limited jobs).

    ``num_workers`` > 0 decodes and augments in worker processes; results do not
    change, since every image has its own seeded generator. ``device``: "cpu",
    "cuda", ...; ``config.precision`` "bf16"/"fp16" turns on CUDA autocast.
    Under ``torchrun`` every process calls ``fit``: batches are sharded across
    ranks, gradients averaged, and only rank 0 writes. Seeds torch's global
    generator with ``config.seed``.
    """
    world = ddp.current_world()
    device = _resolve_device(device, world)
    train_set = resolve_train_set(data, root, **dict(dataset_options or {}))
    output = Path(output_dir)
    last = output / "checkpoints" / LAST
    checkpoint = None
    if last.is_file():
        if not resume:
            raise FileExistsError(f"{output} already holds a training run ({last}); pass resume=True (--resume) "
                                  "to continue it or choose another output directory")
        checkpoint = load_checkpoint(last)
        config = config or TrainConfig.from_dict(checkpoint["train_config"])
        _check_resume(checkpoint, config, train_set, world, last)
    config = config or TrainConfig()

    torch.manual_seed(config.seed)  # identical random parts (heads, prompts, fusion) on every rank
    if checkpoint is None:
        model = initial_model(init, train_set.num_classes, image_size=image_size, progress=progress and world.is_main)
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        stage, done, best = 1, 0, None
    else:
        model = _restore_model(init, checkpoint)
        frozen = set(checkpoint["frozen"])
        stage, done, best = checkpoint["stage"], checkpoint["epoch"], checkpoint["best"]
    model.to(device)
    ddp.broadcast_state(model, world)

    trainer = _Trainer(model, train_set, config, output, world, device, frozen, evaluate=evaluate,
                       eval_every=max(1, eval_every), best_metric=best_metric, num_workers=num_workers,
                       progress=progress)
    trainer.best = best
    started = time.perf_counter()
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "train_config.json", config.to_json() + "\n")
    trainer.log.write("start", resumed_from={"stage": stage, "epoch": done} if checkpoint else None,
                      world_size=world.size, device=str(device), **train_set.fingerprint())
    try:
        finished = trainer.run(stage, done, checkpoint, stop_after)
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(name not in frozen)
        model.eval()
    summary = _summary(trainer, finished, time.perf_counter() - started)
    trainer.log.write("summary", **summary)
    trainer.log.close()
    if world.is_main:
        _finish(model, output, summary, finished, progress)
    ddp.barrier(world)
    return model


def _summary(trainer: _Trainer, finished: bool, seconds: float) -> dict[str, Any]:
    return {
        "finished": finished,
        "seconds": round(seconds, 2),
        "epochs": list(trainer.config.stage_epochs),
        "final_losses": {STAGE_NAMES[s]: means for s, means in sorted(trainer.epoch_means.items())},
        "best": trainer.best,
        "num_classes": trainer.train_set.num_classes,
        "world_size": trainer.world.size,
    }


def _finish(model: CSDN, output: Path, summary: dict[str, Any], finished: bool, progress: bool) -> None:
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    if finished:
        provenance = {key: summary[key] for key in ("epochs", "num_classes", "best")}
        model.save_pretrained(output / "model", extra_meta={"training": provenance})
    if progress:
        state = "finished" if finished else "stopped (resume with resume=True)"
        lines = [f"CSDN training {state} in {summary['seconds']:.0f}s; output in {output}"]
        for name, means in summary["final_losses"].items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in means.items()))
        if summary["best"]:
            best = summary["best"]
            lines.append(f"  best {best['metric']}={best['value']:.4f} "
                         f"(stage {best['stage']} epoch {best['epoch'] + 1})")
        tqdm.write("\n".join(lines))

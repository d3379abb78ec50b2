"""``csdn.train.fit``: the three CSDN training stages, resumable, on one process or many."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from csdn.data.catalog import reader_for
from csdn.io.provenance import training_data
from csdn.model.network import CSDN
from csdn.system.device import device_note, resolve_device
from csdn.system.fileio import atomic_write_text
from csdn.train import ddp
from csdn.train.augment import TrainAugment
from csdn.train.checkpoint import LAST, checkpoint_model, load_checkpoint, model_record
from csdn.train.config import TrainConfig
from csdn.train.console import bars_wanted, emit, epoch_line, summary_table
from csdn.train.data import TrainImages, resolve_train_set
from csdn.train.imagecheck import check_training_images
from csdn.train.initialise import Init, initial_model
from csdn.train.loader import Stage3Loader, plain_view_batches
from csdn.train.pixelcache import PixelCache, open_or_build
from csdn.train.preflight import check_before_writing, check_resume
from csdn.train.rundir import (
    CHECKPOINT_EVENT,
    NO_SNAPSHOTS,
    SnapshotPolicy,
    checkpoint_dir,
    reconcile_best,
    remove_orphan_temporaries,
    save_epoch,
    truncate_log,
)
from csdn.train.runlog import EPOCH_TABLE_FIRST, RunLog, epoch_table, read_log
from csdn.train.sampler import (
    IdentityBatch,
    IdentitySampler,
    epoch_rng,
    feature_batches,
    feature_sample,
    feature_steps,
    seed_torch_for_epoch,
    text_seed,
)
from csdn.train.schedule import apply_learning_rate, stage_schedule
from csdn.train.stages import (
    STAGE_NAMES,
    Losses,
    autocast_factory,
    fusion_step,
    image_step,
    make_optimizer,
    prompt_step,
)

Evaluator = Callable[[CSDN], Mapping[str, float]]
EPOCH_TABLE = "epochs.csv"  # one row per epoch in the run folder (see csdn.train.runlog.epoch_table)


@dataclass
class FeatureSet:
    """Fixed image projections of stage 1 or 2: row ``i`` pairs a visible and an infrared image of ``labels[i]``."""

    visible: torch.Tensor  # [M, embed_dim]
    infrared: torch.Tensor  # [M, embed_dim]
    labels: torch.Tensor  # int64 [M]


def batchnorm_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm running statistic (means, variances, batch counters)."""
    return {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


def restore_buffers(model: torch.nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    buffers = dict(model.named_buffers())
    for name, value in saved.items():
        buffers[name].copy_(value)


def save_model_from_state(state: dict[str, Any], directory: Path) -> None:
    """A checkpoint's weights as a loadable model (``csdn.load(directory)``), with its best record."""
    model = checkpoint_model(state)
    model.load_state_dict(state["model"])
    model.save_pretrained(directory, extra_meta={"training": {"best": state["best"]}})


def _resolve_device(device: str | torch.device | None, world: ddp.World) -> torch.device:
    device = resolve_device(device)  # None or "auto": CUDA when available
    if device.type == "cuda" and world.active and device.index is None:
        device = torch.device("cuda", world.local_rank)
    return device


class _Trainer:
    """One training run: owns the model, the data plans, the log and the checkpoints."""

    def __init__(
        self,
        model: CSDN,
        train_set: TrainImages,
        config: TrainConfig,
        output: Path,
        world: ddp.World,
        device: torch.device,
        frozen: set[str],
        *,
        evaluate: Evaluator | None,
        validate: Evaluator | None,
        eval_every: int,
        best_metric: str,
        num_workers: int,
        progress: bool,
        echo: bool,
        resumed: bool,
        pixel_cache: bool = True,
        snapshots: SnapshotPolicy = NO_SNAPSHOTS,
    ):
        self.model, self.train_set, self.config, self.world, self.device = model, train_set, config, world, device
        self.output = output
        self.frozen_names = frozen
        self.frozen = {id(p) for name, p in model.named_parameters() if name in frozen}
        self.evaluate, self.validate = evaluate, validate
        self.eval_every, self.best_metric = eval_every, best_metric
        self.num_workers, self.progress = num_workers, bars_wanted(progress) and world.is_main
        self.echo = echo and world.is_main
        self.augment = TrainAugment(model.config, config)
        self.autocast = autocast_factory(config.precision, device)
        self.log = RunLog(output / "log.jsonl", enabled=world.is_main, append=resumed)
        self.best: dict[str, Any] | None = None
        self.best_is_new = False
        self.text: torch.Tensor | None = None  # stage 3's fixed classifier
        self.epoch_means: dict[int, dict[str, float]] = {}
        self.last_metrics: dict[str, dict[str, float]] = {}
        self.position: tuple[int, int] | None = None  # (stage, epochs done) of the last checkpoint written here
        self.tensorboard: Any = None
        self.use_pixel_cache = pixel_cache
        self.snapshots = snapshots
        self.pixels: dict[str, PixelCache] = {}
        self.stage3_loader: Stage3Loader | None = None  # one for the stage: its workers serve every epoch
        self._features: dict[int, FeatureSet] = {}  # the current stage's fixed image projections

    # ------------------------------------------------------------------ fixed features
    def _project_sample(self, sample: IdentityBatch, train_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Image projections of a feature sample's visible and infrared rows.

        Batches of ``stage1_batch_size`` alternate visible, infrared as in the
        authors' loader, which matters in train mode: each batch's BatchNorm
        statistics, and the running statistics it updates. Ranks take whole
        batches in turn (their running statistics then differ; rank 0's are kept).
        """
        ts, size, dim = self.train_set, self.config.stage1_batch_size, self.model.config.embed_dim
        starts = range(0, len(sample.labels), size)
        mine = [start for number, start in enumerate(starts) if number % self.world.size == self.world.rank]
        rows = [row for start in mine for row in range(start, min(start + size, len(sample.labels)))]
        loaders = [
            plain_view_batches(
                [images[index] for index in sample_rows[rows]], self.augment, size, num_workers=self.num_workers
            )
            for images, sample_rows in ((ts.visible_images, sample.visible), (ts.infrared_images, sample.infrared))
        ]
        out = {m: torch.zeros(len(sample.labels), dim, device=self.device) for m in ("visible", "infrared")}
        self.model.train(train_mode)
        done = 0
        bar = tqdm(total=len(rows), desc="extracting image features", disable=not self.progress, leave=False)
        for visible, infrared in zip(*loaders):
            for modality, batch in (("visible", visible), ("infrared", infrared)):
                with self.autocast():
                    projection = self.model.image_projection(batch.to(self.device), modality)
                out[modality][rows[done : done + len(batch)]] = projection.float()
            done += len(visible)
            bar.update(len(visible))
        bar.close()
        return ddp.sum_across_ranks(out["visible"], self.world), ddp.sum_across_ranks(out["infrared"], self.world)

    @torch.no_grad()
    def stage_features(self, stage: int, epoch: int) -> FeatureSet:
        """The fixed image projections stage 1 or 2 trains on, extracted once per stage.

        Stage 1 extracts with the pretrained BatchNorm statistics. Under the
        reference recipe stage 2 extracts in train mode (the authors' model is
        left there by stage 1): batch statistics, and running statistics updated
        as an uninterrupted run updates them - a run resumed inside stage 2
        re-extracts the same features and puts back the statistics its checkpoint
        already holds.
        """
        if stage not in self._features:
            cfg = self.config
            sample = feature_sample(self.train_set, cfg.ids_per_batch, cfg.images_per_id, seed=cfg.seed, stage=stage)
            train_mode = stage == 2 and cfg.rules.stage2_features_in_train_mode
            saved = batchnorm_buffers(self.model) if train_mode and epoch > 0 else None
            visible, infrared = self._project_sample(sample, train_mode)
            if saved is not None:
                restore_buffers(self.model, saved)
            self._features = {stage: FeatureSet(visible, infrared, torch.from_numpy(sample.labels).to(self.device))}
        return self._features[stage]

    @torch.no_grad()
    def fused_text(self) -> torch.Tensor:
        """Fused text features of every identity: the fixed classifier of stage 3.

        Under the reference recipe the SII dropout is active (the authors compute
        it with the model still in training mode); its masks come from a seed of
        their own, so a resumed run recomputes the very same classifier.
        """
        self.model.eval()
        self.model.fusion.train(self.config.rules.text_classifier_dropout)
        labels = torch.arange(self.train_set.num_classes, device=self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(text_seed(self.config.seed))
            chunks = labels.split(self.config.feature_batch_size)
            return torch.cat([self.model.fused_text_features(chunk).float() for chunk in chunks])

    # ------------------------------------------------------------------ per-stage step sources
    # Each returns (items, compute, steps, images per step): ``compute(item)`` is one step's losses.
    def _prompt_steps(self, epoch: int) -> tuple[Iterable[Any], Callable[[Any], Losses], int, int]:
        cfg, world = self.config, self.world
        features = self.stage_features(1, epoch)
        steps = feature_steps(len(features.labels), cfg.stage1_batch_size, world.size)
        items = feature_batches(
            epoch_rng(cfg.seed, 1, epoch),
            len(features.labels),
            cfg.stage1_batch_size,
            steps,
            world_size=world.size,
            rank=world.rank,
        )

        def compute(item):
            rows = torch.from_numpy(item).to(self.device)
            labels = features.labels[rows]
            return prompt_step(self.model, features.visible[rows], labels, features.infrared[rows], labels)

        return items, compute, steps, 2 * cfg.stage1_batch_size

    def _fusion_steps(self, epoch: int) -> tuple[Iterable[Any], Callable[[Any], Losses], int, int]:
        cfg, world = self.config, self.world
        sample = self.stage_features(2, epoch)
        features = torch.cat([sample.visible, sample.infrared])
        labels = torch.cat([sample.labels, sample.labels])
        steps = feature_steps(len(features), cfg.stage2_batch_size, world.size)
        items = feature_batches(
            epoch_rng(cfg.seed, 2, epoch),
            len(features),
            cfg.stage2_batch_size,
            steps,
            world_size=world.size,
            rank=world.rank,
        )

        def compute(item):
            index = torch.from_numpy(item).to(self.device)
            return fusion_step(self.model, features[index], labels[index])

        return items, compute, steps, cfg.stage2_batch_size

    def _image_steps(self, epoch: int) -> tuple[Iterable[Any], Callable[[Any], Losses], int, int]:
        cfg, world, dev = self.config, self.world, self.device
        sampler = IdentitySampler(
            self.train_set,
            cfg.ids_per_batch,
            cfg.images_per_id,
            seed=cfg.seed,
            world_size=world.size,
            steps_per_epoch=cfg.steps_per_epoch,
        )
        plan = sampler.epoch(epoch, world.rank)
        if self.stage3_loader is None:
            raise RuntimeError("stage 3 started without its batch loader")
        items = self.stage3_loader.epoch(epoch, plan)

        text = self.text
        if text is None:
            raise RuntimeError("stage 3 started without its fixed text classifier")

        def compute(batch):
            batch = {key: value.to(dev, non_blocking=True) for key, value in batch.items()}
            return image_step(self.model, batch, text, cfg, self.autocast)

        return items, compute, len(plan), 3 * cfg.ids_per_batch * cfg.images_per_id

    def _pixel_caches(self) -> dict[str, PixelCache]:
        """Stage 3's images decoded and resized once (rank 0 writes, the others wait and read)."""
        if not self.use_pixel_cache:
            return {}
        caches: dict[str, PixelCache] = {}
        for turn in (True, False):  # rank 0 builds first; then every other rank opens what it built
            if self.world.is_main == turn:
                for modality, images in (
                    ("visible", self.train_set.visible_images),
                    ("infrared", self.train_set.infrared_images),
                ):
                    size, resample = self.augment.test.size, self.augment.test.resample
                    cache = open_or_build(
                        self.output, modality, images, self.augment.resized, size, resample, self.progress
                    )
                    if cache is not None:
                        caches[modality] = cache
            ddp.barrier(self.world)
        return caches

    def _set_modes(self, stage: int) -> None:
        if stage == 3:
            self.model.train()
        else:  # frozen image model: BatchNorm statistics must not move
            self.model.eval()
            self.model.fusion.train(stage == 2)

    # ------------------------------------------------------------------ training
    def _epoch(self, stage: int, epoch: int, optimizer: torch.optim.Optimizer, scaler) -> dict[str, float]:
        """Train one epoch; return its record: lr, seconds, images/s and the mean of every loss term."""
        cfg = self.config
        lr = apply_learning_rate(optimizer, stage, epoch, cfg)
        seed_torch_for_epoch(cfg.seed, stage, epoch, self.world.rank)
        source = (self._prompt_steps, self._fusion_steps, self._image_steps)[stage - 1]
        items, compute, steps, per_step = source(epoch)  # may extract features first
        self._set_modes(stage)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        totals: dict[str, float] = {}
        started = time.perf_counter()
        bar = tqdm(
            total=steps,
            desc=f"stage {stage} ({STAGE_NAMES[stage]}) epoch {epoch + 1}/{cfg.epochs(stage)}",
            disable=not self.progress,
            unit="step",
        )
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
        record = {"lr": lr, "seconds": round(seconds, 3), "images_per_second": round(images_per_second, 2), **means}
        self.log.write("epoch", stage=stage, epoch=epoch, **record)
        return record

    def _report_epoch(self, stage: int, epoch: int, record: dict[str, float], metrics: dict) -> None:
        """The plain epoch line on stderr and the run folder's epochs.csv (rebuilt from the log)."""
        if not self.echo:
            return
        emit(epoch_line(stage, STAGE_NAMES[stage], epoch, self.config.epochs(stage), record, metrics))
        atomic_write_text(self.output / EPOCH_TABLE, epoch_table(read_log(self.log.path)))
        if self.tensorboard is not None:
            step = sum(self.config.epochs(s) for s in range(1, stage)) + epoch + 1
            for name, value in record.items():
                self.tensorboard.add_scalar(f"stage{stage}/{name}", value, step)
            for event, values in metrics.items():
                for name, value in values.items():
                    self.tensorboard.add_scalar(f"{event}/{name}", value, step)
            self.tensorboard.flush()

    def _measure(self, event: str, judge: Evaluator, stage: int, epoch: int) -> dict[str, float]:
        with torch.no_grad():
            metrics = {name: float(value) for name, value in dict(judge(self.model)).items()}
        self.log.write(event, stage=stage, epoch=epoch, **metrics)
        return metrics

    def _maybe_evaluate(self, stage: int, epoch: int) -> dict[str, dict[str, float]]:
        """Run ``evaluate`` (logged only) and ``validate`` (logged, and the best kept) when due; their metrics."""
        last = epoch + 1 == self.config.epochs(stage)
        due = stage == 3 and (last or (epoch + 1) % self.eval_every == 0)
        measured: dict[str, dict[str, float]] = {}
        if not due or (self.evaluate is None and self.validate is None):
            return measured
        if self.world.is_main:
            self.model.eval()
            if self.evaluate is not None:
                measured["eval"] = self._measure("eval", self.evaluate, stage, epoch)
            if self.validate is not None:
                measured["validation"] = self._measure("validation", self.validate, stage, epoch)
                self._keep_best(measured["validation"], stage, epoch)
            self.last_metrics = measured
        ddp.barrier(self.world)
        return measured

    def _keep_best(self, metrics: dict[str, float], stage: int, epoch: int) -> None:
        if self.best_metric not in metrics:
            raise ValueError(
                f"the validator returned {sorted(metrics)}, without best_metric={self.best_metric!r}; "
                "return it or pass best_metric= one of those names"
            )
        if self.best is None or metrics[self.best_metric] > self.best["value"]:
            self.best = {
                "metric": self.best_metric,
                "value": metrics[self.best_metric],
                "stage": stage,
                "epoch": epoch,
                "metrics": metrics,
            }
            self.best_is_new = True

    def _checkpoint(self, stage: int, done: int, optimizer, scaler) -> None:
        ddp.broadcast_state(self.model, self.world, buffers_only=True)
        if self.world.is_main:
            state = {
                "stage": stage,
                "epoch": done,
                "model": self.model.state_dict(),
                "model_config": model_record(self.model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler else None,
                "scheduler": {"stage": stage, "next_epoch": done},
                "sampler": {
                    "seed": self.config.seed,
                    "stage": stage,
                    "next_epoch": done,
                    "world_size": self.world.size,
                },
                "train_config": self.config.to_dict(),
                "data": self.train_set.fingerprint(),
                "frozen": sorted(self.frozen_names),
                "best": self.best,
            }
            snapshot = save_epoch(self.output, state, self.best_is_new, save_model_from_state, self.snapshots)
            self.best_is_new = False
            self.log.write(CHECKPOINT_EVENT, stage=stage, epoch=done, snapshot=snapshot.name if snapshot else None)
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
                self.pixels = self._pixel_caches()
                self.stage3_loader = Stage3Loader(
                    self.train_set,
                    self.augment,
                    seed=self.config.seed,
                    rank=self.world.rank,
                    num_workers=self.num_workers,
                    pixels=self.pixels,
                    pin_memory=self.device.type == "cuda",
                )
            schedule = stage_schedule(current, self.config)
            self.log.write(
                "stage",
                stage=current,
                name=STAGE_NAMES[current],
                start_epoch=start,
                epochs=epochs,
                warmup_epochs=schedule.warmup_epochs,
                milestones=list(schedule.milestones),
                schedule_scaled=schedule.scaled,
            )
            if self.echo:
                emit(schedule.describe(current, self.config))
            for epoch in range(start, epochs):
                if stop_after is not None and trained >= stop_after:
                    return False
                record = self._epoch(current, epoch, optimizer, scaler)
                self.epoch_means[current] = {k: v for k, v in record.items() if k not in EPOCH_TABLE_FIRST}
                self._report_epoch(current, epoch, record, self._maybe_evaluate(current, epoch))
                self._checkpoint(current, epoch + 1, optimizer, scaler)
                self.position = (current, epoch + 1)
                trained += 1
        return True


def _restore_model(init: Init, checkpoint: dict[str, Any]) -> CSDN:
    model = init if isinstance(init, CSDN) else checkpoint_model(checkpoint)
    model.load_state_dict(checkpoint["model"])
    return model


def _data_record(data: Any, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The dataset and (RegDB) trial a run trains on, as :func:`csdn.io.provenance.training_data` records them."""
    kind = reader_for(data) if isinstance(data, str) else None
    if kind is not None:
        trial = dict(options or {}).get("trial", 1) if kind.trial_bound else None  # RegDB reads trial 1 by default
        return training_data(kind.name, trial)
    name = getattr(data, "name", None)
    trial = getattr(data, "trial", None) if getattr(data, "trial_bound", False) else None
    return training_data(name if isinstance(name, str) else None, trial)


def fit(
    data: Any,
    config: TrainConfig | None = None,
    *,
    output_dir: str | os.PathLike,
    root: str | os.PathLike | None = None,
    init: Init = "RN50",
    evaluate: Evaluator | None = None,
    validate: Evaluator | None = None,
    eval_every: int = 1,
    best_metric: str = "mAP",
    device: str | torch.device | None = None,
    resume: bool = False,
    num_workers: int = 0,
    progress: bool = True,
    image_size: tuple[int, int] | None = None,
    stop_after: int | None = None,
    dataset_options: Mapping[str, Any] | None = None,
    on_error: str = "raise",
    echo: bool = True,
    tensorboard: bool = False,
    pixel_cache: bool = True,
    on_start: Callable[[Path], None] | None = None,
    save_every: int = 0,
    keep: int | None = None,
    device_requested: str | None = None,
) -> CSDN:
    """Train CSDN's three stages (prompts, SII fusion, image model) and return the model.

    ``data``: a dataset name (``"sysu"``, ``"regdb"``, ``"llcm"``, ``"folder"``) with
    ``root``, a reader such as ``csdn.data.SYSUMM01(root)``, an image folder, or any
    object with ``.visible`` / ``.infrared`` sample lists. ``init``: ``"RN50"``, a
    local CLIP file, ``"tiny"``, a :class:`CSDN` (trained in place) or a saved
    model's path.

    ``evaluate(model) -> {"mAP": ...}`` and ``validate(model) -> {...}`` run after
    every ``eval_every``-th stage-3 epoch and the last one. ``evaluate`` (e.g. the
    test protocol) is only logged: the final model is the last one, never the one
    that scored best on test data (the authors' ``main.py`` keeps the best test
    rank-1; that selection inflates reported numbers). ``validate`` is for data
    held out for the purpose: its best by ``best_metric`` is kept as
    ``checkpoints/best.pt`` and as a model in ``best/``.

    Writes ``output_dir/checkpoints/last.pt`` after every epoch (and, with ``save_every=N``,
    keeps a copy as ``checkpoints/stage<S>_epoch_<N>.pt`` after every N-th epoch of each stage,
    at most ``keep`` of them, the oldest removed; ``csdn eval --model`` reads them), ``log.jsonl``
    (losses and learning rate per step, metrics per evaluation),
    ``train_config.json``, ``summary.json`` and the final model
    (``output_dir/model``, via ``save_pretrained``; load it with ``csdn.load``).
    An output directory that already holds a run is refused unless
    ``resume=True``, which continues from ``last.pt`` (with its saved config when
    ``config`` is None; a fresh start if there is no checkpoint yet) and ends
    with the same weights as an uninterrupted run. ``stop_after`` trains at most
    that many epochs in this call (for time-limited jobs).

    ``device_requested`` is what the user asked for when ``device`` was resolved beforehand (the
    CLI's ``--device auto``), so the device line of ``echo`` says why. ``on_start(output_dir)``
    runs on rank 0 when a new run starts, after every check passed (the CLI writes its experiment
    records there, so a refused run leaves no folder).

    ``echo`` prints one plain line per stage and per epoch to stderr (losses, lr, images/s,
    evaluation results in percent) and a closing summary, with or without ``progress`` bars
    (shown only when stderr is a terminal); each epoch also refreshes ``epochs.csv`` in the run
    folder. ``tensorboard=True`` writes the same values to ``output_dir/tensorboard`` (needs the
    ``tensorboard`` extra).

    Every image file is opened before training starts: unreadable ones are listed
    together in one ``ImageDecodeError``, or with ``on_error="skip"`` left out (listed in a
    :class:`csdn.errors.SkippedImagesWarning`).

    ``pixel_cache`` (default on) decodes and resizes stage 3's image files once, into
    ``output_dir/pixel-cache/`` (:mod:`csdn.train.pixelcache`; about 124 KB per image at
    288x144), so the training loop decodes no JPEG; batches are the same bit for bit either way.
    On CUDA, batches are pinned and copied asynchronously.

    ``num_workers`` > 0 decodes and augments in worker processes; results do not
    change, since every image has its own seeded generator. ``device``: "auto" (None: CUDA when available), "cpu",
    "cuda", ...; ``config.precision`` "bf16" turns on autocast (CUDA or CPU), "fp16" on CUDA.
    Under ``torchrun`` every process calls ``fit``: batches are sharded across
    ranks, gradients averaged, and only rank 0 writes. Seeds torch's global
    generator with ``config.seed``.
    """
    snapshots = SnapshotPolicy(save_every, keep)  # before any work: a bad setting fails at once
    world = ddp.current_world()
    requested_device, device = device, _resolve_device(device, world)
    train_set = resolve_train_set(data, root, **dict(dataset_options or {}))
    train_set = check_training_images(train_set, on_error, progress=bars_wanted(progress) and world.is_main)
    output = Path(output_dir)
    last = checkpoint_dir(output) / LAST
    checkpoint = None
    if last.is_file():
        if not resume:
            raise FileExistsError(
                f"{output} already holds a training run ({last}); pass resume=True (--resume) "
                "to continue it or choose another output directory"
            )
        checkpoint = load_checkpoint(last)
        config = config or TrainConfig.from_checkpoint(checkpoint["train_config"])
        check_resume(checkpoint, config, train_set, world, last)
    config = config or TrainConfig()
    check_before_writing(
        config, train_set, device, stop_after=stop_after, eval_every=eval_every, num_workers=num_workers
    )

    torch.manual_seed(config.seed)  # identical random parts (heads, prompts, fusion) on every rank
    if checkpoint is None:
        model = initial_model(
            init, train_set.num_classes, image_size=image_size, progress=bars_wanted(progress) and world.is_main
        )
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        stage, done, best = 1, 0, None
    else:
        model = _restore_model(init, checkpoint)
        frozen = set(checkpoint["frozen"])
        stage, done, best = checkpoint["stage"], checkpoint["epoch"], checkpoint["best"]
    model.provenance.update(_data_record(data, dataset_options))  # saved with every model of the run
    model.to(device)
    ddp.broadcast_state(model, world)

    dropped = 0
    if world.is_main:
        remove_orphan_temporaries(output)
        if checkpoint is not None:
            best = reconcile_best(output, best, save_model_from_state)
            dropped = truncate_log(output / "log.jsonl", stage, done)
    trainer = _Trainer(
        model,
        train_set,
        config,
        output,
        world,
        device,
        frozen,
        evaluate=evaluate,
        validate=validate,
        eval_every=eval_every,
        best_metric=best_metric,
        num_workers=num_workers,
        progress=progress,
        echo=echo,
        resumed=checkpoint is not None,
        pixel_cache=pixel_cache,
        snapshots=snapshots,
    )
    trainer.best = best
    if tensorboard and world.is_main:
        trainer.tensorboard = _tensorboard_writer(output)
    if trainer.echo:  # every check has passed: the run starts here
        emit(f"csdn: {device_note(device_requested or requested_device, device)}")
    started = time.perf_counter()
    if world.is_main:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output / "train_config.json", config.to_json() + "\n")
        if on_start is not None and checkpoint is None:  # e.g. the CLI's experiment records, after every check
            on_start(output)
    trainer.log.write(
        "start",
        resumed_from={"stage": stage, "epoch": done} if checkpoint else None,
        records_dropped=dropped,
        world_size=world.size,
        device=str(device),
        snapshots={"save_every": save_every, "keep": keep},
        **train_set.fingerprint(),
    )
    try:
        finished = trainer.run(stage, done, checkpoint, stop_after)
    except KeyboardInterrupt:
        if trainer.echo:
            emit(_interrupted_message(output, trainer.position or (stage, done)))
        raise
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(name not in frozen)
        model.eval()
        if trainer.tensorboard is not None:
            trainer.tensorboard.close()
    summary = _summary(trainer, finished, time.perf_counter() - started)
    trainer.log.write("summary", **summary)
    trainer.log.close()
    if world.is_main:
        _finish(model, output, summary, finished, trainer)
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


def _tensorboard_writer(output: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "tensorboard=True (--tensorboard) needs the tensorboard package: pip install 'csdn-reid[tensorboard]'"
        ) from None
    return SummaryWriter(log_dir=str(output / "tensorboard"))


def _interrupted_message(output: Path, position: tuple[int, int]) -> str:
    stage, done = position
    return (
        f"CSDN training interrupted; the last checkpoint in {checkpoint_dir(output) / LAST} holds stage {stage} "
        f"after {done} epoch(s): run the same command with --resume (resume=True) to continue"
    )


def _finish(model: CSDN, output: Path, summary: dict[str, Any], finished: bool, trainer: _Trainer) -> None:
    atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    if finished:
        provenance = {key: summary[key] for key in ("epochs", "num_classes", "best")}
        model.save_pretrained(output / "model", extra_meta={"training": provenance})
    if trainer.echo:
        if finished:
            state = "finished"
        else:
            stage, done = trainer.position or (0, 0)
            state = (
                f"stopped after stage {stage} epoch {done}/{trainer.config.epochs(stage)} "
                "(--stop-after); the same command with --resume (resume=True) continues it"
                if stage
                else "stopped before training an epoch; --resume (resume=True) continues it"
            )
        lines = [f"CSDN training {state} in {summary['seconds']:.0f}s; output in {output}"]
        for name, means in summary["final_losses"].items():
            lines.append(f"  {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in means.items()))
        if summary["best"]:
            best = summary["best"]
            lines.append(
                f"  best {best['metric']}={best['value']:.4f} (stage {best['stage']} epoch {best['epoch'] + 1})"
            )
        for event, metrics in trainer.last_metrics.items():
            table = summary_table(
                metrics, f"last {event} (stage 3 epoch {trainer.position[1] if trainer.position else '?'})"
            )
            if table:
                lines.append(table)
        emit("\n".join(lines))

"""One prepared command for a machine with an NVIDIA GPU: CUDA parity with the CPU, then throughput.

    python benchmarks/gpu_check.py          # about 2-4 min on one recent GPU; 8 min at most

It prints one markdown table (paste it into the README as it is):

* parity on CSDN-RN50 at 288x144 (random weights, as ``bench_train.py`` builds them; TF32 off):
  embedding CUDA vs CPU (max abs diff), one stage-3 step of ``TrainConfig()`` CUDA vs CPU (total
  loss relative diff, worst gradient relative diff), bf16 / fp16 autocast vs fp32 on CUDA (total loss
  relative diff), and ``csdn.match`` on CUDA vs CPU (indices equal, max score diff);
* channels-last vs the default layout on CUDA: total loss and BatchNorm-bias gradients. On the CPU
  (torch 2.13) torch's channels-last BatchNorm sums each channel sequentially, 1e-5 to 3e-5 off,
  which is why CPU training uses ``csdn.model.batchnorm``; the verdict says whether CUDA's kernel
  moves the step beyond rounding, against the CUDA-vs-CPU difference as the rounding scale;
* stage-3 training images/s (forward, every loss, backward, fused Adam; 8 ids x 4 images x 3 views
  = 96 images a step, ``bench_train.py``'s full batch) in fp32, TF32, AMP bf16 and AMP fp16, each
  with and without channels-last; median of timed steps after warm-up, ``cudnn.benchmark`` on;
* ``embed_image`` images/s on preprocessed tensors in fp32 and bf16 (flip TTA, batch 128);
* the loader images/s needed to keep this GPU busy: the fastest training images/s.
  ``benchmarks/bench_loader.py`` measures what one CPU worker delivers; workers needed = needed /
  that per-worker figure.

Without CUDA it says so in one line on stderr and exits with code 2.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import EXACTLY_ZERO_GRADIENT, build_model, make_batch  # noqa: E402  (bench_train's weights, batch)

import csdn  # noqa: E402
from csdn import CSDN, CSDNConfig  # noqa: E402
from csdn.train import TrainConfig  # noqa: E402
from csdn.train.stages import autocast_factory, image_step, make_optimizer, recipe_frozen  # noqa: E402

NO_CUDA = (
    "gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False); "
    "run it on a machine with an NVIDIA GPU"
)
IDS, PER_ID = 8, 4  # bench_train.py's full batch: 96 images a step
PARITY_IDS = 2  # the CPU side of the parity step stays a few seconds
WARMUP, TIMED = 3, 7
EMBED_IMAGES, EMBED_BATCH = 512, 128
BEYOND_ROUNDING = 10.0  # channels-last differs "beyond rounding" past 10x the CUDA-vs-CPU difference
Row = tuple[str, str]


def model_config() -> CSDNConfig:
    return CSDNConfig.rn50(num_classes=395)


def text_classifier(config: CSDNConfig, device: torch.device) -> torch.Tensor:
    """Random fused text features of every identity (the fixed classifier of stage 3)."""
    generator = torch.Generator().manual_seed(2)
    return torch.randn(config.num_classes, config.embed_dim, generator=generator).to(device)


def to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool = False) -> dict:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return {
        k: v.to(device).contiguous(memory_format=layout) if v.dim() == 4 else v.to(device) for k, v in batch.items()
    }


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 matmuls and cuDNN convolutions on or off for the block."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``|a - b| / |b|`` in norms, on the CPU."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------------------- parity
def embedding_parity(config: CSDNConfig) -> float:
    """Max abs difference of ``embed_image`` CUDA vs CPU in fp32 (eval mode, flip TTA)."""
    model = build_model(config, seed=0).eval()
    images = torch.randn(8, 3, *config.image_size, generator=torch.Generator().manual_seed(3))
    expected = model.embed_image(images, "infrared")
    got = model.to("cuda").embed_image(images, "infrared")
    return float((got.cpu() - expected).abs().max())


def step_gradients(model: CSDN, batch: dict, text: torch.Tensor, autocast: Callable) -> tuple[dict, dict]:
    """One stage-3 step of ``TrainConfig()``: its loss terms and every gradient, by parameter name."""
    losses = image_step(model, batch, text, TrainConfig(), autocast)
    losses["loss"].backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return {k: v.detach() for k, v in losses.items()}, grads


def worst_gradient(grads: dict, reference: dict) -> float:
    """Worst relative difference over the parameters (not the pool's key bias: its true gradient is 0)."""
    return max(rel(grads[name], reference[name]) for name in reference if name != EXACTLY_ZERO_GRADIENT)


def bn_bias_gradient(grads: dict, reference: dict) -> float:
    """Worst relative difference over the BatchNorm biases (named ``...bn*.bias``)."""
    names = [n for n in reference if n.endswith(".bias") and ".bn" in f".{n}"]
    return max(rel(grads[name], reference[name]) for name in names)


def step_parity(config: CSDNConfig) -> dict[str, float]:
    """CUDA vs CPU in fp32, AMP vs fp32 and channels-last vs default layout, from the same weights and batch."""
    cpu_model = build_model(config, seed=0)
    state = copy.deepcopy(cpu_model.state_dict())
    batch = make_batch(config, PARITY_IDS, PER_ID, seed=1)
    cpu_losses, cpu_grads = step_gradients(
        cpu_model, batch, text_classifier(config, torch.device("cpu")), contextlib.nullcontext
    )
    cuda = torch.device("cuda")
    model, text = cpu_model.to(cuda), text_classifier(config, cuda)
    figures: dict[str, float] = {}
    model.load_state_dict(state)
    losses, grads = step_gradients(model, to_device(batch, cuda), text, contextlib.nullcontext)
    figures["cuda_loss"], figures["cuda_grad"] = (
        rel(losses["loss"], cpu_losses["loss"]),
        worst_gradient(grads, cpu_grads),
    )
    figures["cuda_bn_bias"] = bn_bias_gradient(grads, cpu_grads)
    for precision in ("bf16", "fp16"):
        model.load_state_dict(state)
        amp_losses, _ = step_gradients(model, to_device(batch, cuda), text, autocast_factory(precision, cuda))
        figures[precision] = rel(amp_losses["loss"], losses["loss"])
    model.load_state_dict(state)
    model.to(memory_format=torch.channels_last)
    cl_losses, cl_grads = step_gradients(
        model, to_device(batch, cuda, channels_last=True), text, contextlib.nullcontext
    )
    figures["cl_loss"], figures["cl_bn_bias"] = (
        rel(cl_losses["loss"], losses["loss"]),
        bn_bias_gradient(cl_grads, grads),
    )
    return figures


def match_parity() -> tuple[bool, float]:
    """``csdn.match`` on CUDA tensors vs CPU: indices equal, max score difference (well-separated rows)."""
    generator = torch.Generator().manual_seed(4)
    gallery = torch.nn.functional.normalize(torch.randn(20000, 256, generator=generator), dim=1)
    query = gallery[:500] + 0.02 * torch.randn(500, 256, generator=generator)  # each query near one gallery row
    expected = csdn.match(query, gallery, topk=1)
    got = csdn.match(query.cuda(), gallery.cuda(), topk=1)
    equal = bool(torch.equal(got.indices.cpu(), expected.indices))
    return equal, float((got.scores.cpu() - expected.scores).abs().max())


# --------------------------------------------------------------------------------------- throughput
def median_seconds(step: Callable[[], object], warmup: int = WARMUP, timed: int = TIMED) -> float:
    """Median wall time of ``step`` on the GPU (synchronised) after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(timed):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_images_per_second(config: CSDNConfig, precision: str, use_tf32: bool, channels_last: bool) -> float:
    """Stage-3 steps of ``TrainConfig()``: forward, losses, backward (scaled for fp16), fused Adam."""
    cuda = torch.device("cuda")
    train = TrainConfig(precision=precision)
    model = build_model(config, seed=0).to(cuda)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, 3, train, recipe_frozen(model, train))  # lr 0: every step is the same work
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    batch, text = to_device(make_batch(config, IDS, PER_ID, seed=1), cuda, channels_last), text_classifier(config, cuda)
    autocast = autocast_factory(precision, cuda)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(image_step(model, batch, text, train, autocast)["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()

    with tf32(use_tf32):
        seconds = median_seconds(step)
    return 3 * IDS * PER_ID / seconds


def embedding_images_per_second(config: CSDNConfig, precision: str) -> float:
    model = build_model(config, seed=0).eval().to("cuda")
    images = torch.randn(EMBED_IMAGES, 3, *config.image_size, generator=torch.Generator().manual_seed(5))
    seconds = median_seconds(
        lambda: model.embed_image(images, "visible", precision=precision, batch_size=EMBED_BATCH), warmup=1, timed=3
    )
    return EMBED_IMAGES / seconds


# ------------------------------------------------------------------------------------------- report
def parity_rows(config: CSDNConfig) -> list[Row]:
    with tf32(False):
        embed = embedding_parity(config)
        step = step_parity(config)
        equal, score = match_parity()
    rounding = max(step["cuda_loss"], step["cuda_bn_bias"], 1e-6)
    beyond = step["cl_loss"] > BEYOND_ROUNDING * rounding or step["cl_bn_bias"] > BEYOND_ROUNDING * rounding
    verdict = "YES, beyond rounding" if beyond else "no, rounding only"
    return [
        ("embedding CUDA vs CPU, fp32, max abs diff", f"{embed:.2e}"),
        ("stage-3 step CUDA vs CPU, fp32, loss rel diff", f"{step['cuda_loss']:.2e}"),
        ("stage-3 step CUDA vs CPU, fp32, worst gradient rel diff", f"{step['cuda_grad']:.2e}"),
        ("AMP bf16 vs fp32 (CUDA), loss rel diff", f"{step['bf16']:.2e}"),
        ("AMP fp16 vs fp32 (CUDA), loss rel diff", f"{step['fp16']:.2e}"),
        ("match CUDA vs CPU: indices equal / max score diff", f"{'yes' if equal else 'NO'} / {score:.2e}"),
        ("channels-last vs default (CUDA, fp32): loss rel diff", f"{step['cl_loss']:.2e}"),
        ("channels-last vs default (CUDA, fp32): worst BN-bias grad rel diff", f"{step['cl_bn_bias']:.2e}"),
        ("channels-last changes the step (the CPU BN-bias problem)?", verdict),
    ]


def speed_rows(config: CSDNConfig) -> tuple[list[Row], float]:
    torch.backends.cudnn.benchmark = True
    rows, fastest = [], 0.0
    for label, precision, use_tf32 in (
        ("fp32 (TF32 off)", "fp32", False),
        ("TF32", "fp32", True),
        ("AMP bf16", "bf16", True),
        ("AMP fp16", "fp16", True),
    ):
        for channels_last in (False, True):
            speed = training_images_per_second(config, precision, use_tf32, channels_last)
            fastest = max(fastest, speed)
            layout = "channels-last" if channels_last else "default layout"
            rows.append((f"stage-3 training, {label}, {layout}: images/s", f"{speed:.0f}"))
    for precision in ("fp32", "bf16"):
        rows.append(
            (
                f"embed_image, {precision}, flip, batch {EMBED_BATCH}: images/s",
                f"{embedding_images_per_second(config, precision):.0f}",
            )
        )
    return rows, fastest


def main() -> int:
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    config = model_config()
    head: list[Row] = [
        ("device", torch.cuda.get_device_name()),
        ("torch / CUDA / cuDNN", f"{torch.__version__} / {torch.version.cuda} / {torch.backends.cudnn.version()}"),
        ("model", f"CSDN-RN50 {config.image_size[0]}x{config.image_size[1]}, random weights"),
    ]
    parity = parity_rows(config)
    speed, fastest = speed_rows(config)
    loader = [
        ("loader images/s needed to keep this GPU busy (fastest training)", f"{fastest:.0f}"),
        ("loader workers needed", "needed / bench_loader.py's images/s per worker"),
    ]
    print("| check | value |\n|---|---|")
    for name, value in head + parity + speed + loader:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

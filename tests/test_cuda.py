"""Every CUDA path against its CPU counterpart: embedding, AMP and fp32 stage-3 steps, matching, NCCL
``torchrun`` training and the exported model on ONNX Runtime's CUDA provider.

They run wherever ``torch.cuda.is_available()`` and are skipped with that reason elsewhere. The last
test runs everywhere: ``benchmarks/gpu_check.py`` must refuse a machine without CUDA in one line.
"""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _train_synthetic import write_identities
from safetensors.torch import load_file

import csdn
from csdn import CSDN, CSDNConfig
from csdn.train import TrainConfig
from csdn.train.runlog import read_log
from csdn.train.stages import autocast_factory, image_step

REPO = Path(__file__).resolve().parent.parent
NO_CUDA = "CUDA is not available (torch.cuda.is_available() is False)"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
CUDA = torch.device("cuda")
CLASSES, IDS, PER_ID = 5, 3, 4
GRAD_RTOL = 1e-3  # per tensor: |g_cuda - g_cpu| <= GRAD_RTOL * |g_cpu| (norms); other kernels, other sum orders


def _ort_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


@pytest.fixture
def strict_fp32() -> Iterator[None]:
    """fp32 parity means fp32 kernels: cuDNN convolutions default to TF32 on Ampere and later."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _model() -> CSDN:
    """A tiny model in training mode whose BNNeck biases and classifiers are non-trivial."""
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny(num_classes=CLASSES)).train()
    with torch.no_grad():
        for head in (model.gem_head, model.proj_head):
            head.bn.bias.normal_(0, 0.1)
            head.classifier.weight.normal_(0, 0.1)
    return model


def _batch(device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One stage-3 identity batch and the text classifier, drawn on the CPU and moved to ``device``."""
    generator = torch.Generator().manual_seed(1)
    batch = {
        key: torch.randn(IDS * PER_ID, 3, 64, 32, generator=generator) for key in ("visible", "exchange", "infrared")
    }
    batch["labels"] = torch.tensor([4, 1, 2]).repeat_interleave(PER_ID)
    text = torch.randn(CLASSES, CSDNConfig.tiny(num_classes=CLASSES).embed_dim, generator=generator)
    return {key: value.to(device) for key, value in batch.items()}, text.to(device)


def _assert_close_gradients(ours: torch.nn.Module, reference: torch.nn.Module) -> None:
    for (name, param), (_, expected) in zip(ours.named_parameters(), reference.named_parameters(), strict=True):
        if expected.grad is None:
            assert param.grad is None, name
            continue
        assert param.grad is not None, name
        error = (param.grad.cpu() - expected.grad).norm()
        assert error <= GRAD_RTOL * expected.grad.norm() + 1e-7, f"{name}: {error} vs {expected.grad.norm()}"


# ------------------------------------------------------------------------------------------------ model
@needs_cuda
def test_cuda_embeddings_equal_the_cpu_in_fp32(tiny_model, strict_fp32):
    images = list(torch.randn(6, 3, *tiny_model.config.image_size, generator=torch.Generator().manual_seed(3)))
    on_gpu = copy.deepcopy(tiny_model).to(CUDA)
    for modality in ("visible", "infrared"):
        expected = tiny_model.embed_image(images, modality)
        got = on_gpu.embed_image(images, modality)
        torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=1e-4, msg=modality)


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_an_amp_stage3_step_on_cuda_agrees_with_fp32(precision, strict_fp32):
    """Loss terms within 5% relative / 1e-2 absolute of fp32 (the CPU bf16 test's bounds); finite gradients."""
    model = _model().to(CUDA)
    batch, text = _batch(CUDA)
    config = TrainConfig(precision=precision)
    state = copy.deepcopy(model.state_dict())
    exact = image_step(model, batch, text, config, contextlib.nullcontext)
    model.load_state_dict(state)  # the same BatchNorm statistics for the second pass
    mixed = image_step(model, batch, text, config, autocast_factory(precision, CUDA))
    for name, value in exact.items():
        assert mixed[name].dtype == torch.float32, name
        torch.testing.assert_close(mixed[name], value, rtol=5e-2, atol=1e-2, msg=name)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")  # what the trainer does for fp16
    scaler.scale(mixed["loss"]).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@needs_cuda
def test_a_reference_stage3_step_on_cuda_equals_the_same_step_on_cpu(strict_fp32):
    """TrainConfig()'s step: every loss term within 1e-4 relative, every gradient within GRAD_RTOL."""
    cpu_model = _model()
    cuda_model = copy.deepcopy(cpu_model).to(CUDA)
    config = TrainConfig()
    cpu_losses = image_step(cpu_model, *_batch(torch.device("cpu")), config, contextlib.nullcontext)
    cuda_losses = image_step(cuda_model, *_batch(CUDA), config, contextlib.nullcontext)
    assert cpu_losses.keys() == cuda_losses.keys()
    for name, value in cpu_losses.items():
        torch.testing.assert_close(cuda_losses[name].cpu(), value, rtol=1e-4, atol=1e-6, msg=name)
    cpu_losses["loss"].backward()
    cuda_losses["loss"].backward()
    _assert_close_gradients(cuda_model, cpu_model)
    for name, buffer in cpu_model.state_dict().items():  # BatchNorm running statistics moved alike
        if buffer.is_floating_point():
            torch.testing.assert_close(cuda_model.state_dict()[name].cpu(), buffer, rtol=1e-4, atol=1e-5, msg=name)


# --------------------------------------------------------------------------------------------- matching
def _separated(queries: int, rows: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal gallery rows; each query mixes five of them at weights 0.1 apart, so the top 5 are unique."""
    generator = torch.Generator().manual_seed(4)
    gallery = torch.linalg.qr(torch.randn(dim, rows, generator=generator)).Q.t().contiguous()  # [rows, dim]
    weights = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.1])
    picks = torch.stack([torch.randperm(rows, generator=generator)[:5] for _ in range(queries)])
    query = (weights[:, None] * gallery[picks]).sum(dim=1) + 1e-4 * torch.randn(queries, dim, generator=generator)
    return query, gallery


@needs_cuda
def test_match_on_cuda_tensors_equals_the_cpu():
    query, gallery = _separated(queries=40, rows=64, dim=96)
    expected = csdn.match(query, gallery, topk=5)
    got = csdn.match(query.to(CUDA), gallery.to(CUDA), topk=5)
    assert torch.equal(got.indices.cpu(), expected.indices)
    torch.testing.assert_close(got.scores.cpu(), expected.scores, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------- training
TRAIN_OPTIONS = [
    "--dataset",
    "folder",
    "--init",
    "tiny",
    "--device",
    "cuda",
    "--no-progress",
    "--ids-per-batch",
    "4",
    "--images-per-id",
    "2",
    "--stage1-batch-size",
    "8",
    "--stage2-batch-size",
    "16",
    "--epochs-stage1",
    "1",
    "--epochs-stage2",
    "1",
    "--epochs-stage3",
    "1",
    "--steps-per-epoch",
    "2",
    "--stage3-warmup-epochs",
    "0",
]


@pytest.mark.skipif(
    not torch.cuda.is_available() or not torch.distributed.is_nccl_available(),
    reason=NO_CUDA if not torch.cuda.is_available() else "this torch build has no NCCL (is_nccl_available() is False)",
)
def test_a_one_process_nccl_torchrun_training_run_completes(tmp_path):
    root = write_identities(tmp_path / "data", range(8), per_modality=4)
    output = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "csdn"]
    command += ["train", *TRAIN_OPTIONS, "--root", str(root), "--output", str(output)]
    result = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = read_log(output / "log.jsonl")
    start = [r for r in records if r["event"] == "start"]
    assert [(r["world_size"], r["device"].split(":")[0]) for r in start] == [(1, "cuda")]
    assert sum(1 for r in records if r["event"] == "step" and r["stage"] == 3) == 2
    weights = load_file(str(output / "model" / "model.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


# --------------------------------------------------------------------------------------------- export
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in _ort_providers(),
    reason="ONNX Runtime's CUDA provider is not installed ('CUDAExecutionProvider' not in get_available_providers())",
)
def test_the_exported_model_runs_on_onnx_runtimes_cuda_provider(tiny_model, tmp_path, monkeypatch):
    """The runtime opens CPU sessions only; its backend is swapped for a CUDA-provider session here.

    Within 1e-3 of the PyTorch CPU embeddings: ONNX Runtime's CUDA convolutions may use TF32.
    """
    import onnxruntime as ort

    from csdn.export import export_model
    from csdn.runtime import ExportedEmbedder, backends

    def cuda_backend(path: Path, threads: int | None = None):
        session = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
        assert session.get_providers()[0] == "CUDAExecutionProvider"
        input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
        return lambda images: session.run([output_name], {input_name: images})[0]

    out = tmp_path / "onnx"
    export_model(tiny_model, out)
    monkeypatch.setitem(backends.BACKENDS, "onnx", cuda_backend)
    embedder = ExportedEmbedder(out)
    rgb = np.random.default_rng(5).integers(0, 256, size=(4, 90, 40, 3), dtype=np.uint8)
    for modality in ("visible", "infrared"):
        got = embedder.embed_image(list(rgb), modality)
        expected = tiny_model.embed_image(list(rgb), modality).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0, err_msg=modality)


# ------------------------------------------------------------------------------- gpu_check, anywhere
def test_gpu_check_refuses_a_machine_without_cuda_in_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False); "
        "run it on a machine with an NVIDIA GPU\n"
    )

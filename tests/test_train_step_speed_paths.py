"""The fast training forward (single-query attention pool, channels-last tower) against a plain
re-statement that calls CLIP's own ``AttentionPool2d`` module: outputs, BatchNorm statistics and
every parameter gradient must agree to float rounding.

Differently composed float computations round differently, so everything here is compared with
a stated tolerance, never bit for bit, and relative to each tensor's largest entry: a sum of many
terms that nearly cancel has an absolute rounding error set by the size of the terms, not of the
result. In float64 the two agree to ~1e-13, which shows the arithmetic is the same; in float32
the rounding differences pass through several training-mode BatchNorms (which rescale by the
batch spread) and reach ~1e-5 of the largest gradient entry, hence the looser fp32 tolerance.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from csdn import CSDNConfig
from csdn.model.network import CSDN, TrainOutput

RTOL, ATOL = 1e-5, 1e-6  # fp32, for single-layer comparisons
# (outputs, gradients) tolerance per dtype, relative to each tensor's largest entry
STEP_TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 1e-4)}


@torch.no_grad()
def _randomise(model: CSDN, seed: int) -> CSDN:
    """Non-trivial BatchNorm affines and pool biases (the defaults zero them), so each term is exercised."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.2)
    pool = model.attnpool
    for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
        proj.bias.copy_(torch.randn(proj.bias.shape, generator=gen) * 0.2)
    for head in (model.gem_head, model.proj_head):
        head.classifier.weight.normal_(0.0, 0.1, generator=gen)
    return model


def _model(config: CSDNConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> CSDN:
    torch.manual_seed(seed)
    return _randomise(CSDN(config), seed).to(dtype).train()


def _plain_forward_train(model: CSDN, visible: torch.Tensor, infrared: torch.Tensor) -> TrainOutput:
    """The training forward written out with the plain modules, on contiguous (NCHW) activations,
    and CLIP's attention pool called as a module (all 1 + H*W queries, the first one kept)."""
    stems = torch.cat([model.stem_visible(visible), model.stem_infrared(infrared)])
    fmap = model.trunk(stems)
    gem = model.gem_head.gem(fmap)
    projection = model.attnpool(fmap)
    return TrainOutput(
        gem=gem,
        gem_logits=model.gem_head.classifier(model.gem_head.bn(gem)),
        projection=projection,
        proj_logits=model.proj_head.classifier(model.proj_head.bn(projection)),
    )


def _loss(out: TrainOutput, probes: dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar that sends a different random cotangent into every output."""
    return sum((getattr(out, name) * probe).sum() for name, probe in probes.items())


def _run(model: CSDN, forward, visible, infrared, probes) -> tuple[TrainOutput, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = forward(model, visible, infrared)
    _loss(out, probes).backward()
    return out, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(config: CSDNConfig, visible_count: int, infrared_count: int, dtype: torch.dtype) -> None:
    out_tol, grad_tol = STEP_TOL[dtype]
    fast = _model(config, dtype=dtype)
    plain = copy.deepcopy(fast)
    height, width = config.image_size
    gen = torch.Generator().manual_seed(1)
    visible = torch.randn(visible_count, 3, height, width, generator=gen).to(dtype)
    infrared = torch.randn(infrared_count, 3, height, width, generator=gen).to(dtype)
    rows = visible_count + infrared_count
    sizes = {
        "gem": config.feature_dim,
        "gem_logits": config.num_classes,
        "projection": config.embed_dim,
        "proj_logits": config.num_classes,
    }
    probes = {name: torch.randn(rows, size, generator=gen).to(dtype) for name, size in sizes.items()}

    out, grads = _run(fast, CSDN.forward_train, visible, infrared, probes)
    expected_out, expected_grads = _run(plain, _plain_forward_train, visible, infrared, probes)

    def close(actual, expected, tol, what):
        torch.testing.assert_close(
            actual, expected, rtol=0, atol=tol * float(expected.detach().abs().max()), msg=lambda m: f"{what}: {m}"
        )

    for name in probes:
        close(getattr(out, name), getattr(expected_out, name), out_tol, name)
    for (name, buffer), expected in zip(fast.named_buffers(), plain.buffers()):
        if "running" in name:  # BatchNorm statistics of the mixed batch
            close(buffer, expected, out_tol, name)

    image_side = {name for name, p in fast.named_parameters() if not name.startswith(("prompt", "text", "fusion"))}
    assert set(grads) == set(expected_grads) == image_side  # same tensors reached, incl. the pool's key bias
    key_bias = "attnpool.k_proj.bias"  # its gradient is exactly zero in real arithmetic: both give rounding noise
    key_scale = float(expected_grads["attnpool.k_proj.weight"].abs().max())
    for found in (grads[key_bias], expected_grads[key_bias]):
        assert float(found.abs().max()) <= grad_tol * key_scale
    for name, expected in expected_grads.items():
        if name != key_bias:
            close(grads[name], expected, grad_tol, f"gradient of {name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_forward_train_matches_clip_pool_restatement_tiny(dtype):
    _assert_same_step(CSDNConfig.tiny(num_classes=8), visible_count=8, infrared_count=4, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_forward_train_matches_clip_pool_restatement_rn50_widths(dtype):
    """RN50's widths, head count (32 heads of 64) and 2048-wide pool, on a small image and one block per layer."""
    config = CSDNConfig.rn50(num_classes=16, image_size=(64, 32), vision_layers=(1, 1, 1, 1), text_layers=1)
    _assert_same_step(config, visible_count=4, infrared_count=2, dtype=dtype)


def test_projection_is_one_path_with_and_without_autograd():
    """No hidden switch: inference and training take the same pool, equal to CLIP's module."""
    model = _model(CSDNConfig.tiny()).eval()
    x = torch.randn(3, 3, *model.config.image_size)
    with torch.no_grad():
        fmap = model.feature_map(x, "visible")
        expected = model.attnpool(fmap)
        no_grad = model.image_projection(x, "visible")
    with torch.inference_mode():
        inference = model.image_projection(x, "visible")
    with_grad = model.image_projection(x, "visible")
    assert with_grad.requires_grad
    for actual in (no_grad, inference, with_grad.detach()):
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


def _tiny_with_batch(seed: int) -> tuple[CSDN, torch.Tensor, torch.Tensor]:
    """A randomised tiny model and a visible and an infrared batch of 4 images."""
    model = _model(CSDNConfig.tiny())
    gen = torch.Generator().manual_seed(seed)
    visible, infrared = (torch.randn(4, 3, *model.config.image_size, generator=gen) for _ in range(2))
    return model, visible, infrared


def test_forward_train_input_layout_does_not_matter():
    model, visible, infrared = _tiny_with_batch(3)
    with torch.no_grad():
        plain = model.forward_train(visible, infrared)
        strided = model.forward_train(
            visible.contiguous(memory_format=torch.channels_last), infrared.transpose(2, 3).contiguous().transpose(2, 3)
        )
    for name in ("gem", "gem_logits", "projection", "proj_logits"):  # channels-last kernels round differently
        torch.testing.assert_close(getattr(strided, name), getattr(plain, name), rtol=10 * RTOL, atol=10 * ATOL)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="CPU bfloat16 autocast needs oneDNN")
def test_forward_train_under_cpu_bf16_autocast_tracks_fp32():
    """bf16 autocast changes rounding only: projections within bf16 accuracy of the fp32 ones."""
    model, visible, infrared = _tiny_with_batch(4)
    with torch.no_grad():
        reference = model.forward_train(visible, infrared)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.forward_train(visible, infrared)
    for name in ("gem", "projection"):
        cosine = F.cosine_similarity(getattr(mixed, name).float(), getattr(reference, name), dim=1)
        assert float(cosine.min()) > 0.99, name


@pytest.mark.parametrize("map_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("train_p", [True, False])
def test_training_gem_equals_the_gem_module(map_dtype, train_p):
    """The hand-written GeM backward: same values, dtype and gradients as autograd through the module."""
    model = _model(CSDNConfig.tiny())
    model.gem_head.gem.p.data.fill_(2.7)
    model.gem_head.gem.p.requires_grad_(train_p)
    gen = torch.Generator().manual_seed(5)
    fmap = torch.relu(torch.randn(4, model.config.feature_dim, *model.config.feature_grid, generator=gen))
    fmap = fmap.to(map_dtype).contiguous(memory_format=torch.channels_last)
    probe = torch.randn(4, model.config.feature_dim, generator=gen)
    results = []
    for gem in (model._train_gem, model.gem_head.gem):
        model.zero_grad(set_to_none=True)
        x = fmap.clone().requires_grad_()
        out = gem(x)
        (out * probe).sum().backward()
        p_grad = model.gem_head.gem.p.grad
        results.append((out.detach(), x.grad, p_grad))
    (out, x_grad, p_grad), (expected, expected_x_grad, expected_p_grad) = results
    assert out.dtype == expected.dtype and x_grad.dtype == expected_x_grad.dtype == map_dtype
    tol = 1e-5 if map_dtype == torch.float32 else 1e-2
    for actual, reference in ((out, expected), (x_grad, expected_x_grad)):
        torch.testing.assert_close(actual.float(), reference.float(), rtol=0, atol=tol * float(reference.abs().max()))
    if train_p:
        torch.testing.assert_close(p_grad, expected_p_grad, rtol=tol, atol=0)
    else:
        assert p_grad is None and expected_p_grad is None

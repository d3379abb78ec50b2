"""The fast inference path (folded BatchNorms, channels-last, single-query attention pool)
against the plain modules, and the rules that keep its cached tower fresh."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import csdn.inference.embed
import csdn.inference.fast
import csdn.inference.fold
from csdn import CSDNConfig
from csdn.inference.fast import chunk_size, clear_cache, folded_tower, inference_features
from csdn.model.layers import attention_pool
from csdn.model.network import CSDN
from csdn.model.pool import single_query_attention_pool

TINY = CSDNConfig.tiny()
H, W = TINY.image_size


@torch.no_grad()
def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BatchNorm affines and statistics and attention-pool biases, so folding is really exercised."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            size = module.num_features
            module.weight.copy_(torch.rand(size, generator=gen) + 0.5)
            module.bias.copy_(torch.randn(size, generator=gen) * 0.2)
            module.running_mean.copy_(torch.randn(size, generator=gen) * 0.2)
            module.running_var.copy_(torch.rand(size, generator=gen) * 1.5 + 0.5)
    pool = getattr(model, "attnpool", model)
    for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
        proj.bias.copy_(torch.randn(proj.bias.shape, generator=gen) * 0.2)
    return model


def _model(config: CSDNConfig = TINY, seed: int = 0) -> CSDN:
    torch.manual_seed(seed)
    return _randomise(CSDN(config), seed).eval()


def _plain_features(model: CSDN, x: torch.Tensor, modality: str) -> torch.Tensor:
    """f(x) from the plain modules: unfolded stem and trunk, CLIP's own attention pool."""
    with torch.no_grad():
        stem = model.stem_visible if modality == "visible" else model.stem_infrared
        fmap = model.trunk(stem(x))
        gem = model.gem_head.bn(model.gem_head.gem(fmap))
        return torch.cat([F.normalize(gem, dim=1), F.normalize(model.attnpool(fmap), dim=1)], dim=1)


def _plain_embedding(model: CSDN, x: torch.Tensor, modality: str) -> torch.Tensor:
    flipped = torch.cat([_plain_features(model, x, modality), _plain_features(model, x.flip(3), modality)], dim=1)
    return F.normalize(flipped, dim=1)


@pytest.mark.parametrize("config", [TINY, CSDNConfig.rn50()], ids=["tiny", "rn50"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_single_query_pool_equals_clip_attention_pool(config, layout):
    torch.manual_seed(0)
    pool = attention_pool(config).eval()
    torch.nn.init.normal_(pool.positional_embedding, std=config.feature_dim**-0.5)
    for proj in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
        torch.nn.init.normal_(proj.weight, std=config.feature_dim**-0.5)
    _randomise(pool, 1)
    fmap = torch.relu(torch.randn(3, config.feature_dim, *config.feature_grid)).contiguous(memory_format=layout)
    with torch.no_grad():
        expected = pool(fmap)
        actual = single_query_attention_pool(pool, fmap)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(params=["onednn-fused", "conv2d"])
def kernels(request, monkeypatch) -> str:
    """Run a test with oneDNN's fused kernels (where this build has them) and with the plain fallback."""
    if request.param == "conv2d":
        monkeypatch.setattr(csdn.inference.fold, "onednn_fusion_available", lambda dtype: False)
    return request.param


@pytest.mark.parametrize("modality", ["visible", "infrared"])
def test_fast_features_equal_plain_modules(modality, kernels):
    model = _model()
    x = torch.randn(5, 3, H, W)
    fast = inference_features(model, x, modality)
    assert folded_tower(model).fused == (
        kernels == "onednn-fused" and csdn.inference.fold.onednn_fusion_available(torch.float32)
    )
    torch.testing.assert_close(fast, _plain_features(model, x, modality), atol=1e-5, rtol=0)
    other = "infrared" if modality == "visible" else "visible"
    assert not torch.allclose(fast, _plain_features(model, x, other), atol=1e-3)  # the right stem was used


def test_fast_features_equal_plain_modules_full_size_rn50():
    model = _model(CSDNConfig.rn50(num_classes=4))
    x = torch.randn(2, 3, *model.config.image_size)
    torch.testing.assert_close(
        inference_features(model, x, "infrared"), _plain_features(model, x, "infrared"), atol=1e-5, rtol=0
    )


def test_chunks_cover_every_image_in_order(monkeypatch):
    model = _model()
    monkeypatch.setattr(csdn.inference.fast, "ACTIVATION_BUDGET", 2 * model.config.vision_width * H * W // 4 * 4)
    assert chunk_size(model, torch.float32) == 2
    x = torch.randn(5, 3, H, W)  # chunks of 2, 2 and 1
    torch.testing.assert_close(
        inference_features(model, x, "visible"), _plain_features(model, x, "visible"), atol=1e-5, rtol=0
    )


def test_embed_image_equals_plain_flip_protocol():
    model = _model()
    x = torch.randn(5, 3, H, W)
    torch.testing.assert_close(
        model.embed_image(x, "visible", batch_size=2), _plain_embedding(model, x, "visible"), atol=1e-5, rtol=0
    )


def test_training_and_inference_share_the_single_query_pool():
    model = _model()
    x = torch.randn(2, 3, H, W)
    projection = model.image_projection(x, "visible")  # autograd on: differentiable, same path
    assert projection.grad_fn is not None
    with torch.no_grad():
        fmap = model.feature_map(x, "visible")
        torch.testing.assert_close(projection.detach(), model.attnpool(fmap), atol=1e-5, rtol=1e-5)
        assert torch.equal(model.image_projection(x, "visible"), projection.detach())


def test_folded_tower_is_cached_per_dtype():
    model = _model()
    tower = folded_tower(model)
    assert folded_tower(model) is tower
    half = folded_tower(model, torch.bfloat16)
    assert half is not tower and folded_tower(model, torch.bfloat16) is half
    assert half.blocks[0].conv2.weight.dtype == torch.bfloat16 and half.blocks[0].conv2.bias.dtype == torch.bfloat16


def _optimiser_step(model: CSDN) -> None:
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    out = model.forward_train(visible=torch.randn(4, 3, H, W), infrared=torch.randn(4, 3, H, W))
    (out.gem_logits.logsumexp(1).mean() + out.gem.square().mean()).backward()
    optimiser.step()


def _training_forward(model: CSDN) -> None:
    with torch.no_grad():  # moves the BatchNorm running statistics only
        model.forward_train(visible=torch.randn(4, 3, H, W) * 3 + 1)


def _load_other_weights(model: CSDN) -> None:
    model.load_state_dict(_model(seed=7).state_dict())


def _assign_other_weights(model: CSDN) -> None:
    model.load_state_dict(_model(seed=7).state_dict(), assign=True)


@pytest.mark.parametrize("change", [_optimiser_step, _training_forward, _load_other_weights, _assign_other_weights])
def test_no_stale_results_after_weights_change(change):
    model = _model()
    x = torch.randn(3, 3, H, W)
    before = model.embed_image(x, "visible")
    stale = folded_tower(model)
    model.train()
    change(model)
    model.eval()
    after = model.embed_image(x, "visible")
    assert folded_tower(model) is not stale
    assert not torch.allclose(after, before, atol=1e-3)
    torch.testing.assert_close(after, _plain_embedding(model, x, "visible"), atol=1e-5, rtol=0)


def test_clear_cache_after_writes_through_data():
    model = _model()
    x = torch.randn(2, 3, H, W)
    tower = folded_tower(model)
    model.trunk.layer1[0].conv2.weight.data.mul_(-1.0)  # bypasses version counting
    clear_cache(model)
    assert folded_tower(model) is not tower
    torch.testing.assert_close(
        inference_features(model, x, "visible"), _plain_features(model, x, "visible"), atol=1e-5, rtol=0
    )


def test_bf16_embeddings_stay_close_to_fp32(kernels):
    model = _model()
    x = torch.randn(6, 3, H, W)
    exact = model.embed_image(x, "infrared")
    fast = model.embed_image(x, "infrared", precision="bf16")
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast.norm(dim=1), torch.ones(6))
    cosine = (fast * exact).sum(1)
    assert cosine.min() > 0.99
    assert not torch.equal(fast, exact)  # it really ran in bfloat16


def test_inference_features_need_eval_mode_and_a_known_precision():
    model = _model()
    x = torch.randn(1, 3, H, W)
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; choose one of fp32, bf16"):
        inference_features(model, x, "visible", "fp16")
    model.train()
    with pytest.raises(RuntimeError, match=r"call model.eval\(\) first"):
        inference_features(model, x, "visible")


def test_bf16_warns_on_cpus_without_native_support(monkeypatch):
    model = _model()
    monkeypatch.setattr(csdn.inference.embed, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16 support"):
        model.embed_image(torch.randn(1, 3, H, W), "visible", precision="bf16")

"""Architecture facts of DESIGN section 4, checked on tiny and full-size models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from csdn import CSDNConfig
from csdn.model.clip_code import clip_model, tokenize
from csdn.model.network import CSDN

TEMPLATE_TOKENS = [49406, 320, 1125, 539, 320, 343, 343, 343, 343, 2533, 269, 49407]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _expected_parameter_count(config: CSDNConfig) -> int:
    """Parameter count derived from OpenAI's own CLIP modules plus CSDN's additions."""
    clip = clip_model().CLIP(
        config.embed_dim,
        224,
        config.vision_layers,
        config.vision_width,
        None,
        config.context_length,
        config.vocab_size,
        config.text_width,
        config.text_heads,
        config.text_layers,
    )
    visual = clip.visual
    stem = sum(_count(getattr(visual, n)) for n in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"))
    layers = sum(_count(getattr(visual, f"layer{i}")) for i in range(1, 5))
    pool = _count(visual.attnpool) - visual.attnpool.positional_embedding.numel()
    rows, cols = config.feature_grid
    pool += (rows * cols + 1) * config.feature_dim
    text = _count(clip.transformer) + clip.positional_embedding.numel() + _count(clip.ln_final)
    text += clip.text_projection.numel()
    c, d, e = config.num_classes, config.feature_dim, config.embed_dim
    heads = 1 + 2 * d + c * d + 2 * e + c * e
    prompts = 2 * c * config.num_prompt_tokens * config.text_width
    fusion = 4 * (e * e + e)
    return 2 * stem + layers + pool + text + heads + prompts + fusion


@pytest.mark.parametrize("config", [CSDNConfig.tiny(), CSDNConfig.rn50()], ids=["tiny", "rn50"])
def test_parameter_count_matches_clip_parts(config):
    model = CSDN(config)
    assert _count(model) == _expected_parameter_count(config)


def test_rn50_state_dict_has_the_official_size(rn50_model):
    state = rn50_model.state_dict()
    assert len(state) == 532  # the authors' RN50 checkpoint holds 532 tensors
    assert state["attnpool.positional_embedding"].shape == (163, 2048)
    assert state["prompt_visible.cls_ctx"].shape == (395, 4, 512)
    assert state["prompt_visible.token_prefix"].shape == (1, 5, 512)
    assert state["prompt_visible.token_suffix"].shape == (1, 68, 512)


def test_rn50_feature_shapes(rn50_model):
    x = torch.randn(2, 3, 288, 144)
    with torch.inference_mode():
        fmap = rn50_model.feature_map(x, "visible")
        feats = rn50_model.image_features(x, "infrared")
        proj = rn50_model.image_projection(x, "visible")
    assert fmap.shape == (2, 2048, 18, 9)  # layer4 at stride 1
    assert feats.shape == (2, 3072)
    assert proj.shape == (2, 1024)


def test_prompt_tokenisation_facts():
    tokens = tokenize("A photo of a X X X X person.")
    assert len(tokens) == 77
    assert tokens[:12] == TEMPLATE_TOKENS
    assert all(t == 0 for t in tokens[12:])
    model = CSDN(CSDNConfig.tiny())
    assert model.text_encoder.eot_index == 11


def test_test_feature_halves_are_unit_norm_and_follow_the_definition(tiny_model):
    x = torch.randn(3, 3, 64, 32)
    with torch.inference_mode():
        feats = tiny_model.image_features(x, "visible")
        fmap = tiny_model.feature_map(x, "visible")
        gem = tiny_model.gem_head.bn(tiny_model.gem_head.gem(fmap))
        proj = tiny_model.attnpool(fmap)
    d = tiny_model.config.feature_dim
    torch.testing.assert_close(feats[:, :d], F.normalize(gem, dim=1))
    torch.testing.assert_close(feats[:, d:], F.normalize(proj, dim=1))
    torch.testing.assert_close(feats[:, :d].norm(dim=1), torch.ones(3))
    torch.testing.assert_close(feats[:, d:].norm(dim=1), torch.ones(3))


def test_stem_has_single_relu_after_bn3():
    model = CSDN(CSDNConfig.tiny()).eval()
    stem = model.stem_visible
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        y = stem.bn1(stem.conv1(x))
        y = stem.bn2(stem.conv2(y))  # no ReLU in between: negative values flow on
        y = stem.bn3(stem.conv3(y))
        expected = F.avg_pool2d(F.relu(y), 2)
        torch.testing.assert_close(stem(x), expected)


def test_modalities_use_their_own_stem(tiny_model):
    with torch.no_grad():
        tiny_model.stem_infrared.conv1.weight.mul_(-1.0)
    x = torch.randn(2, 3, 64, 32)
    with torch.inference_mode():
        vis = tiny_model.image_features(x, "visible")
        ir = tiny_model.image_features(x, "ir")
        ir_alias = tiny_model.image_features(x, "thermal")
    assert not torch.allclose(vis, ir)
    torch.testing.assert_close(ir, ir_alias)


def test_gem_pooling_with_learnable_exponent():
    model = CSDN(CSDNConfig.tiny())
    gem = model.gem_head.gem
    assert gem.p.requires_grad and float(gem.p.detach()) == 3.0
    x = torch.rand(2, 4, 3, 3) + 0.1
    expected = x.pow(3).mean(dim=(2, 3)).pow(1 / 3)
    torch.testing.assert_close(gem(x), expected)


def test_text_encoder_equals_clip_encode_text_on_the_template():
    config = CSDNConfig.tiny(text_width=64, text_heads=1)
    clip = clip_model().CLIP(32, 64, (1, 1, 1, 1), 8, None, 77, 49408, 64, 1, 1).eval()
    model = CSDN(config).eval()
    with torch.no_grad():
        model.text_encoder.load_state_dict(
            {
                k: v
                for k, v in clip.state_dict().items()
                if k.startswith(("transformer.", "ln_final.", "positional", "text_proj"))
            }
        )
        tokens = torch.tensor([tokenize(config.prompt_template)])
        embedded = clip.token_embedding(tokens)
        model.prompt_visible.token_prefix.copy_(embedded[:, :5])
        model.prompt_visible.token_suffix.copy_(embedded[:, 9:])
        model.prompt_visible.cls_ctx[2] = embedded[0, 5:9]
        ours = model.text_features(torch.tensor([2]), "visible")
        reference = clip.encode_text(tokens)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)


def test_text_features_are_not_normalised_and_depend_on_identity(tiny_model):
    with torch.inference_mode():
        feats = tiny_model.text_features(torch.tensor([0, 1, 0]), "infrared")
    assert feats.shape == (3, tiny_model.config.embed_dim)
    torch.testing.assert_close(feats[0], feats[2])
    assert not torch.allclose(feats[0], feats[1])
    assert not torch.allclose(feats.norm(dim=1), torch.ones(3))


def test_fusion_single_key_attention_reduces_to_value_path(tiny_model):
    fusion = tiny_model.fusion.eval()
    vis, ir = torch.randn(4, 32), torch.randn(4, 32)
    with torch.no_grad():
        fused = fusion(vis, ir)
        expected = fusion.out_proj(torch.tanh(fusion.v_proj[0](ir))) + vis
        # q and k have no effect: the softmax over a single key is exactly 1
        fusion.q_proj[0].weight.normal_()
        fusion.k_proj[0].weight.normal_()
        again = fusion(vis, ir)
    torch.testing.assert_close(fused, expected)
    torch.testing.assert_close(again, fused)
    labels = torch.tensor([1, 3])
    with torch.inference_mode():
        direct = tiny_model.fused_text_features(labels)
        composed = fusion(tiny_model.text_features(labels, "visible"), tiny_model.text_features(labels, "infrared"))
    torch.testing.assert_close(direct, composed)


def test_forward_train_concatenates_modalities(tiny_model):
    tiny_model.train()
    vis, ir = torch.randn(4, 3, 64, 32), torch.randn(2, 3, 64, 32)
    out = tiny_model.forward_train(vis, ir)
    c = tiny_model.config
    assert out.gem.shape == (6, c.feature_dim)
    assert out.gem_logits.shape == (6, c.num_classes)
    assert out.projection.shape == (6, c.embed_dim)
    assert out.proj_logits.shape == (6, c.num_classes)
    with pytest.raises(ValueError, match="visible batch, an infrared batch"):
        tiny_model.forward_train()


def test_parameter_groups_partition_the_trainable_parameters(tiny_model):
    groups = [
        tiny_model.prompt_parameters(),
        tiny_model.fusion_parameters(),
        tiny_model.text_encoder_parameters(),
        tiny_model.image_parameters(),
        tiny_model.head_parameters(),
    ]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in tiny_model.parameters()}


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (torch.randn(2, 3, 32, 32), ValueError, r"\[N,3,64,32\]"),
        (torch.randn(2, 1, 64, 32), ValueError, r"\[N,3,64,32\]"),
        (torch.randint(0, 255, (2, 3, 64, 32)), TypeError, "float tensor"),
        (torch.randn(3, 64, 32), ValueError, r"\[N,3,64,32\]"),
    ],
)
def test_image_features_reject_bad_tensors_clearly(tiny_model, bad, error, message):
    with pytest.raises(error, match=message):
        tiny_model.image_features(bad, "visible")


def test_unknown_modality_lists_the_choices(tiny_model):
    with pytest.raises(ValueError, match="unknown modality 'depth'.*'visible'.*'infrared'"):
        tiny_model.image_features(torch.randn(1, 3, 64, 32), "depth")


def test_text_features_reject_out_of_range_labels(tiny_model):
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        tiny_model.text_features(torch.tensor([8]), "visible")
    with pytest.raises(ValueError, match="integer"):
        tiny_model.text_features(torch.tensor([0.5]), "visible")


def test_config_json_round_trip_and_validation():
    config = CSDNConfig.tiny(num_classes=11)
    again = CSDNConfig.from_json(config.to_json())
    assert again == config
    assert again.feature_grid == (4, 2)
    assert CSDNConfig().feature_grid == (18, 9)
    assert CSDNConfig().test_feature_dim == 3072
    with pytest.raises(ValueError, match="unknown CSDN config field"):
        CSDNConfig.from_dict({**config.to_dict(), "hidden": 3})
    with pytest.raises(ValueError, match="multiples of the trunk stride 16"):
        CSDNConfig(image_size=(100, 50))
    with pytest.raises(ValueError, match="model_type"):
        CSDNConfig.from_dict({"model_type": "bert"})


def test_resized_positional_embedding_keeps_mean_token_and_interpolates_grid():
    from csdn.model.layers import resize_positional_embedding

    original = torch.randn(50, 16)  # CLIP RN50 at 224 px: 7x7 grid + 1
    resized = resize_positional_embedding(original, (18, 9))
    assert resized.shape == (163, 16)
    torch.testing.assert_close(resized[0], original[0])
    grid = original[1:].reshape(1, 7, 7, 16).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(18, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resized[1:], expected.permute(0, 2, 3, 1).reshape(162, 16))
    with pytest.raises(ValueError, match="square grid"):
        resize_positional_embedding(torch.randn(51, 4), (2, 2))
    assert math.isclose(float(resized[1:].mean()), float(expected.mean()), rel_tol=1e-5, abs_tol=1e-6)

"""The authors' checkpoint format -> CSDN, strictly."""

from __future__ import annotations

import pytest
import torch
from official_format import official_state_dict

from csdn import CSDNConfig
from csdn.hub.official import CheckpointError, from_official, to_official_state_dict

# where DESIGN's table puts each official tensor in the model
PLACEMENTS = {
    "module.image_encoder1.0.weight": "stem_visible.conv1.weight",
    "module.image_encoder2.3.running_var": "stem_infrared.bn2.running_var",
    "module.image_encoder2.5.bias": "stem_infrared.bn3.bias",
    "module.image_encoder.0.0.conv1.weight": "trunk.layer1.0.conv1.weight",
    "module.image_encoder.3.0.downsample.0.weight": "trunk.layer4.0.downsample.0.weight",
    "module.image_encoder.3.0.downsample.1.running_mean": "trunk.layer4.0.downsample.1.running_mean",
    "module.attnpool.positional_embedding": "attnpool.positional_embedding",
    "module.attnpool.c_proj.weight": "attnpool.c_proj.weight",
    "module.classifier.GEM.p": "gem_head.gem.p",
    "module.classifier.BN.running_var": "gem_head.bn.running_var",
    "module.classifier.classifier.weight": "gem_head.classifier.weight",
    "module.classifier2.BN.weight": "proj_head.bn.weight",
    "module.classifier2.classifier.weight": "proj_head.classifier.weight",
    "module.prompt_learner1.cls_ctx": "prompt_visible.cls_ctx",
    "module.prompt_learner2.cls_ctx": "prompt_infrared.cls_ctx",
    "module.prompt_learner2.token_suffix": "prompt_infrared.token_suffix",
    "module.text_encoder.transformer.resblocks.0.attn.in_proj_weight": "text_encoder.transformer.resblocks.0.attn.in_proj_weight",
    "module.text_encoder.text_projection": "text_encoder.text_projection",
    "module.attention_fusion.embedding_q.0.weight": "fusion.q_proj.0.weight",
    "module.attention_fusion.embedding_v.0.bias": "fusion.v_proj.0.bias",
    "module.attention_fusion.embedding_common.0.weight": "fusion.out_proj.weight",
}


def _save(state, tmp_path, name="model_119.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "config, image_size",
    [(CSDNConfig.tiny(num_classes=6), (64, 32)), (CSDNConfig.rn50(), (288, 144))],
    ids=["tiny", "rn50"],
)
def test_official_key_set_converts_with_nothing_missing_or_unexpected(tmp_path, config, image_size):
    state = official_state_dict(config)
    if config == CSDNConfig.rn50():
        assert len(state) == 532
    model = from_official(_save(state, tmp_path), image_size=image_size)
    assert not model.training
    assert model.config.num_classes == config.num_classes
    assert model.config.vision_layers == config.vision_layers
    ours = model.state_dict()
    for official, name in PLACEMENTS.items():
        assert torch.equal(ours[name], state[official]), name
    back = to_official_state_dict(model)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_conversion_needs_no_clip_weights_and_embeds(tmp_path):
    config = CSDNConfig.tiny(num_classes=5)
    model = from_official(_save(official_state_dict(config), tmp_path), image_size=(64, 32), dataset="sysu")
    assert model.provenance["dataset"] == "sysu"
    assert model.provenance["source"] == "model_119.pth"
    emb = model.embed_image(torch.randn(2, 3, 64, 32), "infrared")
    assert emb.shape == (2, 2 * config.test_feature_dim)
    assert torch.isfinite(emb).all()


def test_missing_and_unexpected_keys_are_reported_by_name(tmp_path):
    state = official_state_dict(CSDNConfig.tiny())
    del state["module.attention_fusion.embedding_k.0.bias"]
    state["module.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        from_official(_save(state, tmp_path), image_size=(64, 32))
    message = str(err.value)
    assert "missing keys (1): module.attention_fusion.embedding_k.0.bias" in message
    assert "unexpected keys (1): module.extra_head.weight" in message


def test_shape_mismatch_is_reported(tmp_path):
    state = official_state_dict(CSDNConfig.tiny())
    state["module.classifier2.classifier.weight"] = torch.zeros(8, 7)
    with pytest.raises(CheckpointError, match="classifier2.classifier.weight|proj_head.classifier.weight"):
        from_official(_save(state, tmp_path), image_size=(64, 32))


def test_wrong_image_size_is_explained(tmp_path):
    with pytest.raises(CheckpointError, match="pass the image_size it was trained with"):
        from_official(_save(official_state_dict(CSDNConfig.tiny()), tmp_path), image_size=(288, 144))


def test_a_checkpoint_holding_nan_is_refused_before_conversion(tmp_path):
    state = official_state_dict(CSDNConfig.tiny())
    state["module.image_encoder1.0.weight"][0, 0, 0, 0] = float("nan")
    state["module.classifier2.classifier.weight"][1] = float("inf")
    with pytest.raises(
        CheckpointError,
        match=r"tensor 'module.image_encoder1.0.weight' holds 1 NaN or infinite"
        r" value\(s\); the checkpoint is corrupted",
    ):
        from_official(_save(state, tmp_path), image_size=(64, 32))


def test_not_a_csdn_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not an official CSDN checkpoint"):
        from_official(_save({"module.fc.weight": torch.zeros(2, 2)}, tmp_path))


def test_truncated_file_gives_a_clear_error(tmp_path):
    path = _save(official_state_dict(CSDNConfig.tiny()), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        from_official(path, image_size=(64, 32))


class _Payload:
    """An arbitrary pickled object: weights_only loading must refuse it."""


def test_arbitrary_pickles_are_refused(tmp_path):
    path = _save({"module.x": _Payload()}, tmp_path)
    with pytest.raises(CheckpointError, match="cannot read"):
        from_official(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        from_official("does/not/exist.pth")

"""CLIP initialisation from OpenAI-format weights (synthetic, small) and the verified download."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import pytest
import torch
from safetensors.torch import save_file

from csdn.hub import clip as clip_backbone
from csdn.hub.clip import CLIPWeightsError, from_clip, read_clip_state_dict
from csdn.model.clip_code import clip_model, tokenize
from csdn.model.layers import resize_positional_embedding

STEM = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")


@pytest.fixture(scope="module")
def small_clip():
    """A small CLIP ResNet at 224 px (7x7 attention grid), in OpenAI's own module layout."""
    torch.manual_seed(1)
    model = clip_model().CLIP(32, 224, (1, 1, 1, 1), 8, None, 77, 49408, 64, 1, 1).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2)
    return model


def _check_initialised_from(model, state, grid):
    own = model.state_dict()
    for name in STEM:
        for tensor in ("weight", "running_mean") if name.startswith("bn") else ("weight",):
            source = state[f"visual.{name}.{tensor}"].float()
            assert torch.equal(own[f"stem_visible.{name}.{tensor}"], source)
            assert torch.equal(own[f"stem_infrared.{name}.{tensor}"], source)
    assert torch.equal(own["trunk.layer3.0.downsample.0.weight"], state["visual.layer3.0.downsample.0.weight"].float())
    pos = own["attnpool.positional_embedding"]
    assert pos.shape == (grid[0] * grid[1] + 1, 256)
    expected = resize_positional_embedding(state["visual.attnpool.positional_embedding"].float(), grid)
    assert torch.equal(pos, expected)
    assert torch.equal(own["text_encoder.text_projection"], state["text_projection"].float())
    tokens = torch.tensor(tokenize("A photo of a X X X X person."))
    table = state["token_embedding.weight"].float()
    for learner in ("prompt_visible", "prompt_infrared"):
        assert torch.equal(own[f"{learner}.token_prefix"][0], table[tokens[:5]])
        assert torch.equal(own[f"{learner}.token_suffix"][0], table[tokens[9:]])


def test_from_plain_openai_state_dict_at_288x144(tmp_path, small_clip):
    state = small_clip.state_dict()
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    model = from_clip(path, num_classes=7, progress=False)
    assert model.config.image_size == (288, 144)
    assert model.config.num_classes == 7
    _check_initialised_from(model, state, (18, 9))  # 163-token positional embedding
    assert model.attnpool.positional_embedding.shape[0] == 163
    # stems are separate copies: training one must not move the other
    with torch.no_grad():
        model.stem_visible.conv1.weight.add_(1.0)
    assert not torch.equal(model.stem_visible.conv1.weight, model.stem_infrared.conv1.weight)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_from_torchscript_archive(tmp_path, small_clip):
    image = torch.randn(1, 3, 224, 224)
    text = torch.tensor([tokenize("a person")])
    traced = torch.jit.trace(small_clip, (image, text))
    path = tmp_path / "RN50-like.pt"
    traced.save(str(path))
    model = from_clip(path, num_classes=3, image_size=(64, 32), progress=False)
    _check_initialised_from(model, small_clip.state_dict(), (4, 2))


def test_from_open_clip_style_checkpoint(tmp_path, small_clip):
    wrapped = {"state_dict": {"module." + k: v for k, v in small_clip.state_dict().items()}, "epoch": 32}
    path = tmp_path / "epoch_32.pt"
    torch.save(wrapped, path)
    model = from_clip(path, num_classes=3, image_size=(64, 32), progress=False)
    _check_initialised_from(model, small_clip.state_dict(), (4, 2))
    st_path = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in small_clip.state_dict().items()}, str(st_path))
    assert set(read_clip_state_dict(st_path)) == set(small_clip.state_dict())


def test_vit_weights_are_refused(tmp_path):
    state = {"visual.proj": torch.zeros(4, 4), "visual.conv1.weight": torch.zeros(4, 3, 16, 16)}
    path = tmp_path / "vit.pt"
    torch.save(state, path)
    with pytest.raises(CLIPWeightsError, match="ViT"):
        from_clip(path, progress=False)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def clip_server(tmp_path, small_clip, monkeypatch):
    """Serve a CLIP checkpoint on 127.0.0.1 under a URL that names its SHA-256, as OpenAI's do."""
    payload = tmp_path / "payload.pt"
    torch.save(small_clip.state_dict(), payload)
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    served = tmp_path / "site" / digest
    served.mkdir(parents=True)
    (served / "RN50.pt").write_bytes(payload.read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path / "site")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(clip_backbone, "OPENAI_URLS", {"RN50": f"{base}/{digest}/RN50.pt"})
    monkeypatch.setenv("CSDN_CACHE", str(tmp_path / "cache"))
    yield served / "RN50.pt", base, digest
    server.shutdown()


def test_rn50_download_is_verified_and_cached(clip_server, tmp_path):
    served, _, _ = clip_server
    first = clip_backbone.download_openai("RN50", progress=False)
    assert first == tmp_path / "cache" / "clip" / "RN50.pt"
    assert first.read_bytes() == served.read_bytes()
    served.unlink()  # a second call must not touch the network
    assert clip_backbone.download_openai("RN50", progress=False) == first
    model = from_clip("RN50", source="openai", num_classes=4, image_size=(64, 32), progress=False)
    assert model.provenance["init"] == "CLIP RN50"
    assert model.provenance["base_model"] == "timm/resnet50_clip.openai"  # the same weights' Hub name


def test_rn50_download_with_wrong_checksum_is_discarded(clip_server, tmp_path, monkeypatch):
    _, base, digest = clip_server
    wrong = "0" * 64
    (tmp_path / "site" / wrong).mkdir()
    (tmp_path / "site" / wrong / "RN50.pt").write_bytes(b"not the weights")
    monkeypatch.setattr(clip_backbone, "OPENAI_URLS", {"RN50": f"{base}/{wrong}/RN50.pt"})
    with pytest.raises(CLIPWeightsError, match="SHA-256"):
        clip_backbone.download_openai("RN50", progress=False)
    leftovers = list((tmp_path / "cache" / "clip").iterdir())
    assert leftovers == []  # neither the bad file nor a partial download stays behind


def test_unreachable_download_explains_the_offline_alternative(clip_server, monkeypatch):
    monkeypatch.setattr(clip_backbone, "OPENAI_URLS", {"RN50": "http://127.0.0.1:9/abc/RN50.pt"})
    with pytest.raises(CLIPWeightsError, match="pass its local path"):
        clip_backbone.download_openai("RN50", progress=False)


# ---------------------------------------------------------------------------- CLIP weights through the Hub
CLIP_REPO = "timm/resnet50_clip.openai"
CLIP_FILE = "open_clip_model.safetensors"


def _open_clip_bytes(model, tmp_path, name) -> bytes:
    """``model``'s weights as open_clip publishes them on the Hub: a safetensors file, open_clip key names."""
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


@pytest.fixture
def clip_on_hub(fake_hub, tmp_path, small_clip, monkeypatch):
    """The small CLIP as ``timm/resnet50_clip.openai`` on the fake Hub, and a registry pinning it."""
    payload = _open_clip_bytes(small_clip, tmp_path, "clip.safetensors")
    commit = fake_hub.commit(CLIP_REPO, {CLIP_FILE: payload, "open_clip_config.json": b"{}"})
    registry = tmp_path / "registry.json"
    _write_registry(registry, commit, hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("CSDN_REGISTRY", str(registry))
    return registry, commit


def _write_registry(path, revision, sha256):
    import json

    path.write_text(
        json.dumps(
            {
                "format_version": 1,
                "models": {},
                "clip": {"RN50": {"repo_id": CLIP_REPO, "filename": CLIP_FILE, "revision": revision, "sha256": sha256}},
            }
        )
    )


def test_rn50_comes_from_the_hub_at_the_pinned_revision(clip_on_hub, fake_hub, small_clip):
    _, commit = clip_on_hub
    model = from_clip("RN50", num_classes=4, image_size=(64, 32), progress=False)
    _check_initialised_from(model, small_clip.state_dict(), (4, 2))
    assert f"/{CLIP_REPO}/resolve/{commit}/{CLIP_FILE}" in fake_hub.paths_requested("HEAD")
    assert model.provenance["base_model"] == CLIP_REPO and model.provenance["init"] == "CLIP RN50"
    fake_hub.commit(CLIP_REPO, {CLIP_FILE: b"a later upload"})  # main moves on; the pin does not
    again = from_clip("RN50", num_classes=4, image_size=(64, 32), progress=False)
    assert torch.equal(again.trunk.layer1[0].conv1.weight, model.trunk.layer1[0].conv1.weight)


def test_rn50_from_the_shared_cache_offline(clip_on_hub, fake_hub, small_clip, monkeypatch):
    from_clip("RN50", num_classes=4, image_size=(64, 32), progress=False)
    requests = len(fake_hub.requests)
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    model = from_clip("RN50", num_classes=4, image_size=(64, 32), progress=False)
    assert len(fake_hub.requests) == requests  # HF_HUB_OFFLINE: the cache only
    _check_initialised_from(model, small_clip.state_dict(), (4, 2))


def test_a_file_with_another_hash_than_the_pin_is_refused(fake_hub, tmp_path, small_clip, monkeypatch):
    payload = _open_clip_bytes(small_clip, tmp_path, "clip.safetensors")
    commit = fake_hub.commit(CLIP_REPO, {CLIP_FILE: payload})
    _write_registry(tmp_path / "registry.json", commit, "0" * 64)
    with pytest.raises(CLIPWeightsError, match="registry pins 0{64}.*Delete"):
        from_clip("RN50", registry=tmp_path / "registry.json", progress=False)


def test_revision_picks_another_commit_checked_against_the_hub_hash(clip_on_hub, fake_hub, tmp_path):
    torch.manual_seed(5)
    other = clip_model().CLIP(32, 224, (1, 1, 1, 1), 8, None, 77, 49408, 64, 1, 1).eval()
    newer = fake_hub.commit(CLIP_REPO, {CLIP_FILE: _open_clip_bytes(other, tmp_path, "other.safetensors")})
    model = from_clip("RN50", revision=newer, num_classes=4, image_size=(64, 32), progress=False)
    _check_initialised_from(model, other.state_dict(), (4, 2))


def test_unknown_names_and_sources_are_explained(clip_on_hub):
    with pytest.raises(ValueError, match="unknown CLIP weights 'RN51'.*known: RN50"):
        from_clip("RN51", progress=False)
    with pytest.raises(ValueError, match="source must be one of hub, openai"):
        from_clip("RN50", source="s3", progress=False)
    with pytest.raises(ValueError, match="revision= applies to source='hub' only"):
        from_clip("RN50", source="openai", revision="v1", progress=False)


def test_the_hub_unreachable_names_the_alternatives(clip_on_hub, fake_hub):
    from csdn.errors import WeightsNotAvailableError

    fake_hub.fail(f"/{CLIP_REPO}/", 404)
    with pytest.raises(WeightsNotAvailableError, match="source='openai'"):
        from_clip("RN50", progress=False, timeout=10)


def test_the_installed_registry_pins_rn50_on_the_hub():
    from csdn.hub.registry import open_registry

    entry = open_registry().clip_weights("RN50")
    assert (entry.repo_id, entry.filename) == (CLIP_REPO, CLIP_FILE)
    assert len(entry.revision) == 40 and len(entry.sha256) == 64

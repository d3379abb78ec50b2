"""Issue 22, class 2: outputs are checked like inputs. A non-finite embedding is an error naming its images
(PyTorch, the exported-model runtime, the CLI), and weights with NaN or absurd values are refused on load,
also from a bare ``model.safetensors`` that has no ``config.json`` (and so no recorded hash) beside it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import csdn
from csdn import cli
from csdn.errors import NonFiniteEmbeddingError, WeightsError


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert cli.main(["export", "synthetic-tiny", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def huge(tiny_model) -> torch.Tensor:
    """Finite preprocessed images scaled by 1e15: every value finite, every embedding overflowed."""
    images = torch.randn(3, 3, *tiny_model.config.image_size, generator=torch.Generator().manual_seed(0))
    images[1] *= 1e15
    return images


def test_embed_image_refuses_nan_embeddings_from_finite_tensors(tiny_model, huge):
    with pytest.raises(NonFiniteEmbeddingError, match=r"NaN or infinite embeddings for 1 of 3 image\(s\).*image 1 of"):
        tiny_model.embed_image(huge, "visible")
    assert torch.isfinite(tiny_model.embed_image(huge[[0, 2]], "visible")).all()  # finite ones still embed


def _divide_by_zero(model) -> None:
    """Finite, small weights whose arithmetic is not finite: the GeM head's BatchNorm variance is negative,
    so its normalisation takes the square root of a negative number."""
    with torch.no_grad():
        model.gem_head.bn.running_var.fill_(-1.0)


def test_the_folded_tower_refuses_weights_that_fold_to_nan(tiny_model):
    with torch.no_grad():
        next(m for m in tiny_model.stem_infrared.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var.fill_(
            -1.0
        )
    images = torch.zeros(2, 3, *tiny_model.config.image_size)
    with pytest.raises(WeightsError, match="fold to NaN or infinite weights"):
        tiny_model.embed_image(images, "infrared")  # the fused ReLU would have turned the NaN into zeros


def test_embed_image_names_the_files_whose_embeddings_are_not_finite(tiny_model, tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 64), (90, 120, 30)).save(tmp_path / name)
    _divide_by_zero(tiny_model)
    with pytest.raises(
        NonFiniteEmbeddingError, match=r"2 of 2 image\(s\): \S*a\.png, \S*b\.png; image 0, 1 of this call"
    ):
        tiny_model.embed_image(tmp_path, "infrared")


def test_the_runtime_refuses_nan_embeddings_without_a_numpy_warning(exported):
    from csdn.runtime import ExportedEmbedder

    embedder = ExportedEmbedder(exported)
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 32)).astype(np.float32)
    batch[0] *= 1e15
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning alone is what it gave before
        with pytest.raises(NonFiniteEmbeddingError, match=r"1 of 2 image\(s\): image 0 of this call"):
            embedder.embed_preprocessed(batch, "visible")
    assert np.isfinite(embedder.embed_preprocessed(batch[1:], "visible")).all()


def test_the_runtime_accepts_zero_preprocessed_rows(exported):
    from csdn.runtime import ExportedEmbedder

    embedder = ExportedEmbedder(exported)
    empty = embedder.embed_preprocessed(np.zeros((0, 3, 64, 32), np.float32), "visible")
    assert empty.shape[0] == 0 and empty.shape[1] == embedder.graph("visible").meta.embedding_dim(True)


def _bare(tiny_model, tmp_path: Path, name: str, value: float) -> Path:
    """``model.safetensors`` alone (its config in the metadata, no config.json, so no recorded hash)."""
    folder = tiny_model.save_pretrained(tmp_path / "saved")
    state = load_file(folder / "model.safetensors")
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as handle:
        metadata = handle.metadata()
    state[name] = state[name].clone()
    state[name].view(-1)[0] = value
    bare = tmp_path / "bare"
    bare.mkdir()
    save_file(state, bare / "model.safetensors", metadata=metadata)
    return bare / "model.safetensors"


def _first_float(tiny_model) -> str:
    return next(k for k, v in tiny_model.state_dict().items() if v.is_floating_point() and v.numel() > 1)


@pytest.mark.parametrize("value", [6.3e37, float("nan"), -float("inf"), 3e9])
def test_a_bare_weights_file_with_an_absurd_or_nonfinite_weight_is_refused(tiny_model, tmp_path, value):
    name = _first_float(tiny_model)
    bare = _bare(tiny_model, tmp_path, name, value)
    with pytest.raises(WeightsError, match=rf"tensor '{name}' holds 1 .*It was not loaded"):
        csdn.load(bare)


def test_the_cli_refuses_an_absurd_weight_in_one_line(capsys, tiny_model, tmp_path):
    bare = _bare(tiny_model, tmp_path, _first_float(tiny_model), 6.3e37)
    Image.new("RGB", (32, 64)).save(tmp_path / "a.png")
    code = cli.main(
        ["embed", str(tmp_path / "a.png"), "--model", str(bare), "--modality", "visible"]
        + ["--output", str(tmp_path / "e.npy"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "absurdly large" in err and "bare/model.safetensors" in err
    assert not (tmp_path / "e.npy").exists()


def test_the_cli_names_the_images_whose_embeddings_are_not_finite(capsys, tiny_model, tmp_path):
    _divide_by_zero(tiny_model)
    model = tiny_model.save_pretrained(tmp_path / "overflowing")
    Image.new("RGB", (32, 64), (10, 200, 30)).save(tmp_path / "photo.png")
    code = cli.main(
        ["embed", str(tmp_path / "photo.png"), "--model", str(model), "--modality", "visible"]
        + ["--output", str(tmp_path / "e.npy"), "--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "NaN or infinite embeddings" in err and "photo.png" in err
    assert not (tmp_path / "e.npy").exists()


def test_settings_and_meta_tensors_are_named(tiny_model):
    from csdn.errors import ImageTensorError, SettingError

    images = torch.zeros(2, 3, *tiny_model.config.image_size)
    with pytest.raises(SettingError, match=r"batch_size must be a whole number of images, at least 1; got 1\.5"):
        tiny_model.embed_image(images, "visible", batch_size=1.5)
    with pytest.raises(SettingError, match="flip must be True or False, got 'no'"):
        tiny_model.embed_image(images, "visible", flip="no")
    with pytest.raises(ImageTensorError, match="'meta' device"):
        tiny_model.embed_image(torch.empty(2, 3, *tiny_model.config.image_size, device="meta"), "visible")
    with pytest.raises(TypeError, match="'meta' device"):
        csdn.match(torch.empty(2, 8, device="meta"), torch.randn(3, 8))

"""Export to ONNX / OpenVINO: verification on export, the metadata and its hash checks, the torch-free
runtime's parity with ``embed_image``, and every bad input with its message. Tiny models throughout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="needs the csdn-reid[onnx] extra (CI installs it)")

import csdn
from csdn import cli
from csdn.errors import (
    ArtifactError,
    ExportError,
    ImageDecodeError,
    ImageTensorError,
    MissingDependencyError,
    OutputExistsError,
    SkippedImagesWarning,
)
from csdn.export import FLOORS, FP32_TOLERANCE, Floors, export_model
from csdn.runtime import ExportedEmbedder, read_metadata
from csdn.system.fileio import sha256_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundled():
    return csdn.load("synthetic-tiny", progress=False)


@pytest.fixture(scope="module")
def onnx_fp32(bundled, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx-fp32"
    assert cli.main(["export", "synthetic-tiny", str(out), "--quiet"]) == 0
    return out


def _reference(model, images, modality: str, **options) -> np.ndarray:
    """The PyTorch path's embeddings of the same inputs (folders included)."""
    return model.embed_image(images, modality, **options).numpy()


def _people(tmp_path: Path) -> dict[str, object]:
    """Raw images of every kind embed_image takes, at sizes other than the model's."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(90, 40, 3), dtype=np.uint8)
    thermal = rng.integers(0, 2**14, size=(70, 30), dtype=np.uint16)
    folder = tmp_path / "people"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(thermal).save(folder / "b.png")  # a 16-bit PNG (mode I;16)
    return {"rgb": rgb, "thermal": thermal, "folder": folder, "pil": Image.fromarray(rgb[::-1].copy())}


# ---------------------------------------------------------------------------------------- fp32 ONNX
def test_an_fp32_export_writes_one_verified_graph_per_modality_with_its_metadata(bundled, onnx_fp32):
    assert sorted(p.name for p in onnx_fp32.iterdir()) == [
        "infrared.onnx",
        "infrared.onnx.json",
        "visible.onnx",
        "visible.onnx.json",
    ]
    for modality in ("visible", "infrared"):
        artifact = onnx_fp32 / f"{modality}.onnx"
        meta = read_metadata(artifact)
        assert meta.files == {artifact.name: sha256_file(artifact)}
        assert (meta.modality, meta.precision, meta.format, meta.opset) == (modality, "fp32", "onnx", 17)
        assert meta.feature_dim == bundled.config.test_feature_dim
        assert (meta.image_size, meta.mean, meta.std, meta.interpolation) == (
            bundled.config.image_size,
            bundled.config.mean,
            bundled.config.std,
            bundled.config.interpolation,
        )
        assert meta.source["weights_sha256"] == sha256_file(REPO / "weights/synthetic-tiny/model.safetensors")
        assert meta.package_version == csdn.__version__
        parity = meta.verification["parity"]
        assert meta.verification["passed"] and meta.verification["tolerance"] == FP32_TOLERANCE
        assert 0 < parity["max_abs_diff"] <= FP32_TOLERANCE and len(parity["batch_sizes"]) >= 3


def test_the_runtime_equals_embed_image_on_every_input_kind(bundled, onnx_fp32, tmp_path):
    people = _people(tmp_path)
    embedder = ExportedEmbedder(onnx_fp32)
    cases = [
        ([people["rgb"], people["pil"], people["folder"] / "b.png"], "visible", {}),
        (people["folder"], "thermal", {"batch_size": 1}),
        (people["thermal"], "ir", {"bit_depth": 14}),
        ([people["rgb"]] * 5, "infrared", {"flip": False, "batch_size": 2}),
    ]
    for images, modality, options in cases:
        ours = embedder.embed_image(images, modality, **options)
        theirs = _reference(bundled, images, modality, **options)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, atol=FP32_TOLERANCE, rtol=0)
    assert embedder.embed_image(people["rgb"], "visible").shape == (2 * bundled.config.test_feature_dim,)
    assert embedder.embed_image([], "visible").shape == (0, 2 * bundled.config.test_feature_dim)


def test_the_runtime_skips_unreadable_images_as_the_pytorch_path_does(bundled, onnx_fp32, tmp_path):
    people = _people(tmp_path)
    (people["folder"] / "broken.png").write_bytes(b"junk")
    (people["folder"] / ".hidden.png").write_bytes(b"junk")  # not an image to either path
    embedder = ExportedEmbedder(onnx_fp32)
    with pytest.raises(ImageDecodeError, match="broken.png"):
        embedder.embed_image(people["folder"], "infrared")
    with pytest.warns(SkippedImagesWarning) as ours:
        kept = embedder.embed_image(people["folder"], "infrared", on_error="skip")
    with pytest.warns(SkippedImagesWarning) as theirs:
        reference = _reference(bundled, people["folder"], "infrared", on_error="skip")
    assert [s.source for s in ours[0].message.skipped] == [s.source for s in theirs[0].message.skipped]
    assert kept.shape == reference.shape == (2, 2 * bundled.config.test_feature_dim)
    np.testing.assert_allclose(kept, reference, atol=FP32_TOLERANCE, rtol=0)


def test_match_accepts_runtime_embeddings(onnx_fp32, tmp_path):
    people = _people(tmp_path)
    embedder = ExportedEmbedder(onnx_fp32)
    gallery = embedder.embed_image([people["rgb"], people["pil"]], "visible")
    query = embedder.embed_image(people["rgb"], "infrared")
    found = csdn.match(query, gallery, topk=2)
    assert found.indices.shape == (1, 2)
    np.testing.assert_allclose(found.scores[0].numpy(), np.sort(gallery @ query)[::-1], atol=1e-6)


TORCH_BLOCKED = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, NoTorch())
import numpy as np
import csdn
from csdn.runtime import ExportedEmbedder
config = csdn.CSDNConfig.tiny()  # the config class needs no torch either
embeddings = ExportedEmbedder(sys.argv[1]).embed_image(sys.argv[2], "infrared")
np.save(sys.argv[3], embeddings)
print(sorted(name for name in sys.modules if name.split(".")[0] == "torch"))
"""


def test_the_runtime_imports_and_runs_where_torch_cannot_be_imported(bundled, onnx_fp32, tmp_path):
    people = _people(tmp_path)
    out = tmp_path / "embeddings.npy"
    run = subprocess.run(
        [sys.executable, "-c", TORCH_BLOCKED, str(onnx_fp32), str(people["folder"]), str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    expected = _reference(bundled, people["folder"], "infrared")
    np.testing.assert_allclose(np.load(out), expected, atol=FP32_TOLERANCE, rtol=0)


# ---------------------------------------------------------------------------------------- reduced precision, OpenVINO
REDUCED = [("onnx", "int8"), ("onnx", "fp16"), ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]


@pytest.mark.parametrize("fmt,precision", REDUCED)
def test_each_format_and_precision_exports_verified_and_runs(bundled, tmp_path, fmt, precision):
    if fmt == "openvino":
        pytest.importorskip("openvino", reason="needs the csdn-reid[openvino] extra (CI installs it)")
    out = tmp_path / "export"
    written = export_model(bundled, out, format=fmt, modality="visible", precision=precision, verify_identities=40)
    main = ".onnx" if fmt == "onnx" else ".xml"
    assert written == [out / f"visible{main}"]
    meta = read_metadata(written[0])
    assert set(meta.files) == ({"visible.onnx"} if fmt == "onnx" else {"visible.xml", "visible.bin"})
    figures = meta.verification
    assert figures["passed"] and meta.precision == precision
    rgb = np.random.default_rng(2).integers(0, 256, size=(6, 64, 32, 3), dtype=np.uint8)
    ours = ExportedEmbedder(out).embed_image(rgb, "visible")
    theirs = bundled.embed_image(rgb, "visible").numpy()
    cosine = (ours * theirs).sum(1)
    if precision == "fp32":
        assert figures["parity"]["max_abs_diff"] <= FP32_TOLERANCE
        np.testing.assert_allclose(ours, theirs, atol=FP32_TOLERANCE, rtol=0)
    else:
        floors = FLOORS[precision]
        agreement = figures["agreement"]
        assert agreement["identities"] == 40
        assert agreement["cosine_min"] >= floors.cosine and agreement["top1_agreement"] >= floors.top1
        assert cosine.min() >= floors.cosine
        assert figures["parity"]["max_abs_diff"] > 0  # a reduced-precision graph is not bit-exact


def test_int8_calibrates_on_the_users_folder_and_a_bad_calibration_is_refused(bundled, tmp_path):
    from csdn.export.samples import synthetic_people

    people, noise = tmp_path / "people", tmp_path / "noise"
    (people / "visible").mkdir(parents=True)
    noise.mkdir()
    for index, image in enumerate(synthetic_people(8, "visible", (64, 32), seed=5)):
        image.save(people / "visible" / f"{index}.png")
    rng = np.random.default_rng(3)
    for index in range(8):  # uniform noise: activation ranges unlike any person's
        Image.fromarray(rng.integers(0, 256, size=(64, 32, 3), dtype=np.uint8)).save(noise / f"{index}.png")
    out = tmp_path / "int8"
    export_model(bundled, out, modality="visible", precision="int8", calibration=people, verify_identities=40)
    assert read_metadata(out / "visible.onnx").verification["passed"]
    with pytest.raises(ArtifactError, match=r"visible int8 onnx graph does not match.*calibrate on your own images"):
        export_model(
            bundled, tmp_path / "bad", modality="visible", precision="int8", calibration=noise, verify_identities=40
        )
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------- metadata and hashes
def _copy(export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export, tmp_path / "copy"))


def test_an_artifact_changed_after_export_is_refused(onnx_fp32, tmp_path):
    copy = _copy(onnx_fp32, tmp_path)
    with open(copy / "infrared.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(
        ArtifactError, match=r"infrared.onnx does not match its metadata: its SHA-256.*export the model again"
    ):
        ExportedEmbedder(copy)
    assert cli.main(["export-info", str(copy)]) == 2


def test_metadata_that_is_missing_edited_or_for_other_files_is_refused(onnx_fp32, tmp_path):
    copy = _copy(onnx_fp32, tmp_path)
    with pytest.raises(ArtifactError, match="no metadata file"):
        (copy / "visible.onnx.json").unlink()
        ExportedEmbedder(copy / "visible.onnx")
    meta = json.loads((copy / "infrared.onnx.json").read_text())
    for change, message in (
        ({"modality": "ultraviolet"}, "modality 'ultraviolet'"),
        ({"files": {"other.onnx": "0" * 64}}, "lists the files"),
        ({"colour": "red"}, "unknown colour"),
    ):
        (copy / "infrared.onnx.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(ArtifactError, match=message):
            ExportedEmbedder(copy)
    (copy / "infrared.onnx.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ExportedEmbedder(copy)
    shutil.rmtree(copy)
    copy.mkdir()
    with pytest.raises(ArtifactError, match="no exported model in .*csdn export"):
        ExportedEmbedder(copy)


# ---------------------------------------------------------------------------------------- bad input
def test_the_embedder_refuses_wrong_sizes_unknown_and_missing_modalities(bundled, onnx_fp32, tmp_path):
    embedder = ExportedEmbedder(onnx_fp32)
    with pytest.raises(ImageTensorError, match=r"must be a float32 array \[N,3,64,32\].*pass raw images"):
        embedder.embed_preprocessed(np.zeros((2, 3, 32, 32), np.float32), "visible")
    bad = np.zeros((2, 3, 64, 32), np.float32)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ImageTensorError, match="NaN or infinite values"):
        embedder.embed_preprocessed(bad, "visible")
    with pytest.raises(ValueError, match="unknown modality 'uv'; choose one of"):
        embedder.embed_image(np.zeros((64, 32, 3), np.uint8), "uv")
    with pytest.raises(TypeError, match="cannot read images from dict"):
        embedder.embed_image({"a": 1}, "visible")
    with pytest.raises(
        ImageTensorError, match=r"looks like preprocessed images \[N,3,H,W\]: pass it to embed_preprocessed"
    ):
        embedder.embed_image(np.zeros((2, 3, 64, 32), np.float32), "visible")
    visible_only = tmp_path / "visible-only"
    visible_only.mkdir()
    for name in ("visible.onnx", "visible.onnx.json"):
        shutil.copy(onnx_fp32 / name, visible_only / name)
    with pytest.raises(ArtifactError, match="no infrared graph.*--modality infrared or --modality both"):
        ExportedEmbedder(visible_only).embed_image(np.zeros((64, 32, 3), np.uint8), "thermal")
    preprocessed = np.random.default_rng(0).standard_normal((3, 3, 64, 32)).astype(np.float32)
    np.testing.assert_allclose(
        embedder.embed_preprocessed(preprocessed, "visible", batch_size=2),
        bundled.embed_image(torch.from_numpy(preprocessed), "visible").numpy(),
        atol=FP32_TOLERANCE,
        rtol=0,
    )


def test_bad_export_settings_fail_before_anything_is_written(tiny_model, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="unsupported ONNX opset 9: choose 13-20"):
        export_model(tiny_model, out, opset=9)
    with pytest.raises(ExportError, match="unknown precision 'int4'; choose one of fp32, fp16, int8"):
        export_model(tiny_model, out, precision="int4")
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export_model(tiny_model, out, format="tflite")
    with pytest.raises(ValueError, match="unknown modality"):
        export_model(tiny_model, out, modality="uv")
    with pytest.raises(ExportError, match="calibration.*int8 only"):
        export_model(tiny_model, out, calibration=tmp_path)
    with pytest.raises(ExportError, match="calibration folder not found: .*pass a folder of images"):
        export_model(tiny_model, out, precision="int8", calibration=tmp_path / "nowhere")
    tiny_model.config.interpolation = "area"
    with pytest.raises(ExportError, match="interpolation 'area'.*cannot reproduce; set config.interpolation to one of"):
        export_model(tiny_model, out)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_extra_is_named(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "csdn-reid\[openvino\]"'):
        export_model(tiny_model, tmp_path / "out", format="openvino")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_verification_leaves_no_artifact_and_an_existing_export_is_kept(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    export_model(tiny_model, out, modality="visible")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_model(tiny_model, out, modality="visible")
    monkeypatch.setattr("csdn.export.verify.FP32_TOLERANCE", 0.0)
    with pytest.raises(
        ArtifactError, match="does not match the PyTorch model: max abs embedding difference.*Nothing was written"
    ):
        export_model(tiny_model, out, modality="infrared", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == before  # the old export is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and no half-built folder is left
    monkeypatch.undo()
    export_model(tiny_model, out, modality="infrared", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["infrared.onnx", "infrared.onnx.json"]


def test_the_command_line_exports_and_reports(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        cli.main(
            [
                "export",
                "synthetic-tiny",
                str(out),
                "--modality",
                "visible",
                "--precision",
                "int8",
                "--verify-identities",
                "20",
                "--floors",
                "0.9",
                "0.5",
                "--quiet",
            ]
        )
        == 0
    )
    assert "visible int8 onnx, max |diff|" in capsys.readouterr().out
    figures = read_metadata(out / "visible.onnx").verification
    assert figures["floors"] == {"cosine_min": 0.9, "top1_agreement": 0.5}
    assert figures["agreement"]["identities"] == 20
    assert cli.main(["export-info", str(out / "visible.onnx")]) == 0
    assert "files match their metadata" in capsys.readouterr().out
    assert cli.main(["export", "synthetic-tiny", str(tmp_path / "x"), "--opset", "21"]) == 2
    assert "csdn: error: unsupported ONNX opset 21" in capsys.readouterr().err
    assert cli.main(["export", "synthetic-tiny", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


# ---------------------------------------------------------------------------- int8: what stays float32
def _float_convs(path: Path) -> set[str]:
    """The Conv nodes of a QDQ graph whose weights were not quantised (no DequantizeLinear feeds them)."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    return {node.name for node in graph.node if node.op_type == "Conv" and node.input[1] not in dequantized}


def _convs(path: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(path)).graph.node if node.op_type == "Conv"]


class _LaterBlocksFloat(csdn.CSDN):
    int8_float_modules = ("stem_infrared", "trunk.layer2")  # the infrared stem: not in a visible graph


@pytest.mark.parametrize(
    "cls, expected",
    [
        (csdn.CSDN, ("/stem/", "/blocks/blocks.0/")),  # CLIP layout: the stem and trunk.layer1.0, folded
        (_LaterBlocksFloat, ("/blocks/blocks.1/",)),  # csdn_tiny has one block per layer: layer2's is blocks.1
    ],
)
def test_int8_keeps_float_exactly_the_modules_the_model_class_declares(cls, expected, tiny_model, tmp_path):
    from csdn.export.graph import INPUT_NAME, write_onnx
    from csdn.export.quantize import quantize_int8

    model = cls(tiny_model.config).eval()
    model.load_state_dict(tiny_model.state_dict())
    graph = write_onnx(model, "visible", tmp_path / "fp32.onnx")
    keep = graph.node_prefixes(cls.int8_float_modules)
    calibration = [np.random.default_rng(0).standard_normal((4, 3, 64, 32)).astype(np.float32)]
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration, INPUT_NAME, keep)
    convs = _convs(tmp_path / "fp32.onnx")
    wanted = {name for name in convs if name.startswith(expected)}
    assert keep == expected and wanted and len(wanted) < len(convs)
    assert _float_convs(tmp_path / "int8.onnx") == wanted


def test_the_export_asks_the_model_which_modules_stay_float(tiny_model, tmp_path, monkeypatch):
    import csdn.export.api as api

    asked = []
    real = api.quantize_int8
    monkeypatch.setattr(api, "quantize_int8", lambda *args: asked.append(args[-1]) or real(*args))
    model = _LaterBlocksFloat(tiny_model.config).eval()
    model.load_state_dict(tiny_model.state_dict())
    lenient = Floors(cosine=1e-6, top1=1e-6)  # random weights: the graph's agreement is not the point
    export_model(model, tmp_path / "out", modality="visible", precision="int8", floors=lenient, verify_identities=20)
    assert asked == [("/blocks/blocks.1/",)]
    assert _float_convs(tmp_path / "out" / "visible.onnx") == {
        name for name in _convs(tmp_path / "out" / "visible.onnx") if name.startswith("/blocks/blocks.1/")
    }


def test_a_declared_module_the_model_does_not_have_is_refused(tiny_model, tmp_path):
    class Misspelt(csdn.CSDN):
        int8_float_modules = ("trunk.layer9",)

    model = Misspelt(tiny_model.config).eval()
    with pytest.raises(ExportError, match=r"Misspelt.int8_float_modules names 'trunk.layer9', which is no module"):
        export_model(model, tmp_path / "out", modality="visible", precision="int8", verify_identities=20)
    assert not (tmp_path / "out").exists()

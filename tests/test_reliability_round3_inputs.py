"""Issue 22, classes 4, 5 and 8: photos are read upright (EXIF orientation), a torn run log or a full disk
during a checkpoint is told plainly and leaves the run resumable, and arguments that size an allocation are
bounded before anything is allocated."""

from __future__ import annotations

import errno
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import csdn
from csdn import cli
from csdn.images.decode import load_image

# ---------------------------------------------------------------------------- class 4: EXIF orientation

UPRIGHT_SIZE = (40, 80)  # (width, height): a portrait photo, as a person crop is
# orientation -> how a camera stores the upright picture under that tag (the inverse of what undoes it)
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _upright() -> Image.Image:
    """A smooth picture with no symmetry (every orientation of it differs), so JPEG keeps it well."""
    width, height = UPRIGHT_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 255 * x / width
    green = 255 * y / height
    blue = 230 * np.exp(-((x - 0.25 * width) ** 2 + (y - 0.2 * height) ** 2) / 60.0)
    return Image.fromarray(np.stack([red, green, blue], axis=2).round().astype(np.uint8), mode="RGB")


def _store(path: Path, orientation: int, picture: Image.Image | None = None, **save) -> Path:
    """``picture`` (default :func:`_upright`) as a camera would store it with EXIF ``orientation``."""
    picture = picture or _upright()
    method = STORED_AS[orientation]
    stored = picture if method is None else picture.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, **save)
    return path


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_fixture_stores_pictures_the_way_pil_reads_them(tmp_path, orientation):
    path = _store(tmp_path / "p.png", orientation)
    assert np.array_equal(_pixels(ImageOps.exif_transpose(Image.open(path))), _pixels(_upright()))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_image_turns_every_orientation_upright_from_each_kind_of_input(tmp_path, orientation):
    png = _store(tmp_path / "p.png", orientation)
    jpeg = _store(tmp_path / "p.jpg", orientation, quality=95)
    upright = _pixels(_upright())
    for path in (png, jpeg):
        reference = _pixels(ImageOps.exif_transpose(Image.open(path)))
        for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes()), Image.open(path)):
            decoded = load_image(source)
            assert decoded.size == UPRIGHT_SIZE, (path.suffix, type(source).__name__)
            assert np.array_equal(_pixels(decoded), reference)
    assert np.array_equal(_pixels(load_image(png)), upright)  # lossless: exactly the upright picture
    assert np.abs(_pixels(load_image(jpeg)) - upright).mean() < 2.0  # JPEG: within its compression error


def test_a_sixteen_bit_thermal_tiff_with_an_orientation_tag_is_turned_too(tmp_path):
    frame = (np.arange(80 * 40, dtype=np.uint16).reshape(80, 40) * 4) % 16384  # 14-bit counts, portrait
    stored = np.ascontiguousarray(np.rot90(frame))  # stored on its side (orientation 6: turn it back clockwise)
    path = tmp_path / "thermal.tif"
    Image.fromarray(stored).save(path, tiffinfo={0x0112: 6}, compression="tiff_lzw")
    decoded = load_image(path, bit_depth=14)
    assert decoded.size == (40, 80) and np.array_equal(_pixels(decoded), _pixels(load_image(frame, bit_depth=14)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_single_channel_tiff_is_upright_or_refused_never_scrambled(tmp_path, orientation):
    """PIL applies a TIFF's own orientation tag while decoding, and (Pillow 13) scrambles uncompressed
    single-channel files with orientations 5-8: those are refused, naming the file, instead."""
    path = _store(tmp_path / "gray.tif", orientation, _upright().convert("L"))
    try:
        decoded = load_image(path)
    except csdn.errors.ImageDecodeError as err:
        assert orientation >= 5 and str(err).startswith(f"image {path}: PIL decoded it at 80x40 pixels although")
        assert str(err).endswith("save it again upright or compressed") and str(err).count("gray.tif") == 1
    else:
        assert np.array_equal(_pixels(decoded), _pixels(_upright().convert("L")))


def test_pixels_made_in_memory_are_taken_as_they_are(tmp_path):
    path = _store(tmp_path / "p.png", 6)
    stored = Image.open(path)
    assert load_image(stored.copy()).size == (80, 40)  # a copy holds pixels, not a file: no turning
    assert load_image(np.asarray(stored)).size == (80, 40)
    turned = ImageOps.exif_transpose(Image.open(path))  # a user who turned it already is not turned twice
    assert np.array_equal(_pixels(load_image(turned)), _pixels(_upright()))


@pytest.mark.parametrize(
    "exif",
    [
        b"Exif\x00\x00garbage that is no TIFF header",
        b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",  # first IFD offset far past the end
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x09\x00\x00",  # value 9
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x00\x00\x00",  # value 0
    ],
    ids=["garbage", "truncated", "value-9", "value-0"],
)
def test_a_broken_or_meaningless_exif_block_leaves_the_pixels_as_stored(tmp_path, exif):
    path = tmp_path / "p.jpg"
    _upright().save(path, exif=exif, quality=95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's "Corrupt EXIF data" warnings are not passed on either
        decoded = load_image(path)
    assert decoded.size == UPRIGHT_SIZE and np.abs(_pixels(decoded) - _pixels(_upright())).mean() < 2.0


def _sideways_and_upright(folder: Path) -> tuple[list[Path], list[Path]]:
    """The same picture in every orientation (lossless PNG), and the upright picture as many times."""
    folder.mkdir()
    tagged = [_store(folder / f"o{orientation}.png", orientation) for orientation in range(1, 9)]
    upright = [folder / f"up{i}.png" for i in range(1, 9)]
    for path in upright:
        _upright().save(path)
    return tagged, upright


def test_embed_image_embeds_a_tagged_photo_as_the_upright_one(tiny_model, tmp_path):
    tagged, upright = _sideways_and_upright(tmp_path / "photos")
    with torch.no_grad():
        got = tiny_model.embed_image([str(p) for p in tagged], "visible")
        want = tiny_model.embed_image([str(p) for p in upright], "visible")
        as_stored = tiny_model.embed_image([np.asarray(Image.open(p)) for p in tagged], "visible")
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # the check has teeth: the stored (sideways, mirrored) pixels embed measurably differently
    assert (as_stored[1:] - want[1:]).abs().amax(dim=1).min() > 1e-3


def test_the_cli_embeds_a_tagged_photo_as_the_upright_one(tiny_model, tmp_path):
    tagged, upright = _sideways_and_upright(tmp_path / "photos")
    model = tiny_model.save_pretrained(tmp_path / "model")
    outputs = {}
    for name, files in (("tagged", tagged), ("upright", upright)):
        out = tmp_path / f"{name}.npy"
        code = cli.main(
            ["embed", *map(str, files), "--model", str(model), "--modality", "visible", "--output", str(out)]
            + ["--quiet"]
        )
        assert code == 0
        outputs[name] = np.load(out)
    np.testing.assert_allclose(outputs["tagged"], outputs["upright"], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    assert cli.main(["export", "synthetic-tiny", str(out), "--quiet"]) == 0
    return out


def test_the_runtime_embeds_a_tagged_photo_as_the_upright_one(exported, tmp_path):
    from csdn.runtime import ExportedEmbedder

    tagged, upright = _sideways_and_upright(tmp_path / "photos")
    embedder = ExportedEmbedder(exported)
    got = embedder.embed_image([str(p) for p in tagged], "visible", progress=False)
    want = embedder.embed_image([str(p) for p in upright], "visible", progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_training_reads_and_caches_tagged_photos_upright(tmp_path):
    from csdn.train.augment import TrainAugment
    from csdn.train.config import TrainConfig
    from csdn.train.pixelcache import open_or_build

    tagged, upright = _sideways_and_upright(tmp_path / "photos")
    augment = TrainAugment(csdn.CSDNConfig.tiny(), TrainConfig())
    want = np.stack([augment.resized(p) for p in upright])
    assert np.array_equal(np.stack([augment.resized(p) for p in tagged]), want)
    cache = open_or_build(
        tmp_path / "run", "visible", tagged, augment.resized, augment.test.size, augment.test.resample, False
    )
    assert cache is not None and np.array_equal(np.stack([cache[i] for i in range(len(tagged))]), want)


def test_evaluation_reads_tagged_photos_upright(tiny_model, tmp_path):
    from csdn.data.samples import Sample
    from csdn.evaluation.protocol import EmbeddingTable

    tagged, upright = _sideways_and_upright(tmp_path / "photos")
    samples = {
        name: [Sample(str(p), pid=1, camid=1, modality="infrared") for p in files]
        for name, files in (("tagged", tagged), ("upright", upright))
    }
    assert all(s.load().size == UPRIGHT_SIZE for s in samples["tagged"])
    table = EmbeddingTable(tiny_model, batch_size=8, progress=False)
    table.add(samples["tagged"] + samples["upright"])
    np.testing.assert_allclose(table.matrix(samples["tagged"]), table.matrix(samples["upright"]), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- class 5: run log and checkpoints

RECORDS = [{"event": "start", "time": 1.0}, {"event": "step", "stage": 1, "epoch": 0, "step": 0, "loss": 2.5}]


def _log(path: Path, tail: bytes) -> Path:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS) + tail)
    return path


@pytest.mark.parametrize(
    "tail",
    [b'{"event": "step", "stage": 1, "ep', b'{"event": "st\n', b"\x00" * 37, b'{"loss": "\xe2\x82'],
    ids=["cut-mid-string", "cut-then-newline", "zero-filled", "cut-mid-character"],
)
def test_a_torn_last_log_line_is_dropped_with_a_warning_naming_the_file(tmp_path, tail):
    from csdn.train.runlog import read_log

    path = _log(tmp_path / "log.jsonl", tail)
    with pytest.warns(RuntimeWarning, match=r"log\.jsonl: its last line is not a whole record"):
        assert read_log(path) == RECORDS


@pytest.mark.parametrize("damage", [b'{"event": "st\n', b"not json at all\n", b"[1, 2]\n", b"\xff\xfe\n"])
def test_a_damaged_line_inside_the_log_is_an_error_naming_the_file_and_line(tmp_path, damage):
    from csdn.errors import RunLogError
    from csdn.train.runlog import read_log

    path = tmp_path / "log.jsonl"
    path.write_bytes(json.dumps(RECORDS[0]).encode() + b"\n" + damage + json.dumps(RECORDS[1]).encode() + b"\n")
    with pytest.raises(RunLogError, match=r"log\.jsonl, line 2 of 3: not a JSON record .*delete that line"):
        read_log(path)


def test_appending_to_a_log_cuts_its_torn_last_line_off_first(tmp_path):
    from csdn.train.runlog import RunLog, read_log

    path = _log(tmp_path / "log.jsonl", b'{"event": "step", "sta')
    log = RunLog(path, append=True)
    log.write("start", resumed=True)
    log.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the torn line is gone: no warning, and the new record is whole
        records = read_log(path)
    assert records[:2] == RECORDS and records[2]["event"] == "start" and len(records) == 3


TRAIN = dict(
    ids_per_batch=4,
    images_per_id=2,
    stage1_batch_size=16,
    stage2_batch_size=32,
    stage1_epochs=1,
    stage2_epochs=1,
    stage3_epochs=1,
    steps_per_epoch=1,
    warmup_epochs=1,
    stage3_warmup_epochs=1,
    milestones=(),
)


@pytest.fixture(scope="module")
def train_root(tmp_path_factory) -> Path:
    from _train_synthetic import write_identities

    return write_identities(tmp_path_factory.mktemp("identities"), range(8), per_modality=4)


def _fit(root: Path, output: Path, **options):
    from csdn.train import TrainConfig, fit

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train several times faster on one thread
    try:
        return fit(root, TrainConfig(**TRAIN), output_dir=output, init="tiny", progress=False, **options)
    finally:
        torch.set_num_threads(previous)


def test_resume_after_a_torn_last_log_line_warns_and_continues(train_root, tmp_path):
    from csdn.train.runlog import read_log

    _fit(train_root, tmp_path, stop_after=1)
    log = tmp_path / "log.jsonl"
    with open(log, "ab") as handle:
        handle.write(b'{"event": "step", "stage": 2, "epoch": 0, "loss": "unterminat')
    with pytest.warns(RuntimeWarning, match=rf"{log}: its last line is not a whole record"):
        _fit(train_root, tmp_path, resume=True, stop_after=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        records = read_log(log)
    assert [r["event"] for r in records].count("start") == 2
    assert any(r["event"] == "epoch" and r["stage"] == 2 for r in records)


def test_resume_with_a_damaged_line_inside_the_log_names_the_file_and_line(train_root, tmp_path, capsys):
    from csdn.errors import RunLogError

    _fit(train_root, tmp_path, stop_after=1)
    log = tmp_path / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b'{"event": "st\n' + b"".join(lines[1:]))
    with pytest.raises(RunLogError, match=rf"{log}, line 2 of {len(lines) + 1}: not a JSON record"):
        _fit(train_root, tmp_path, resume=True, stop_after=1)


class _FullDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: writes past it raise ENOSPC, as the kernel does."""

    def __init__(self, handle, room: int, code: int = errno.ENOSPC):
        self.handle, self.room, self.code = handle, room, code

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.handle.write(data)

    def close(self) -> None:
        self.handle.close()
        super().close()


def _disk_with_room(monkeypatch, room: int, code: int = errno.ENOSPC) -> None:
    """Every file the atomic writer creates gets ``room`` bytes before the disk is full."""
    import builtins

    from csdn.system import fileio

    def limited_open(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(handle, room, code) if mode == "wb" else handle

    monkeypatch.setattr(fileio, "open", limited_open, raising=False)


STATE = {"stage": 1, "epoch": 1, "model": {"w": torch.arange(20000, dtype=torch.float32)}}


@pytest.mark.parametrize("room", [0, 500, 40_000], ids=["nothing", "in-the-header", "mid-tensor"])
def test_a_full_disk_during_a_checkpoint_is_named_and_keeps_the_previous_one(tmp_path, monkeypatch, room):
    from csdn.errors import DiskFullError
    from csdn.train.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"stage": 1, "epoch": 0, "model": {"w": torch.zeros(3)}}, path)
    before = path.read_bytes()
    _disk_with_room(monkeypatch, room)
    with pytest.raises(DiskFullError, match=rf"cannot write {path}: no space left on its disk") as caught:
        save_checkpoint(STATE, path)
    assert "inline_container" not in str(caught.value) and "unexpected pos" not in str(caught.value)
    assert path.read_bytes() == before and torch.equal(load_checkpoint(path)["model"]["w"], torch.zeros(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary left behind


def test_another_failed_checkpoint_write_names_the_file_and_the_reason(tmp_path, monkeypatch):
    from csdn.train.checkpoint import save_checkpoint

    _disk_with_room(monkeypatch, 1000, errno.EIO)
    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'last.pt'}: Input/output error"):
        save_checkpoint(STATE, tmp_path / "last.pt")
    assert not list(tmp_path.iterdir())


def test_a_full_disk_while_training_is_named_and_the_run_resumes(train_root, tmp_path, monkeypatch):
    from csdn.errors import DiskFullError
    from csdn.train.checkpoint import load_checkpoint

    _fit(train_root, tmp_path, stop_after=1)
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()
    with monkeypatch.context() as patch:
        _disk_with_room(patch, 4096)
        with pytest.raises(DiskFullError, match=rf"cannot write {tmp_path}/\S+: no space left on its disk"):
            _fit(train_root, tmp_path, resume=True, stop_after=1)
    assert last.read_bytes() == before
    _fit(train_root, tmp_path, resume=True, stop_after=1)  # space freed: the run continues from its checkpoint
    assert load_checkpoint(last)["stage"] == 2


def test_a_full_disk_while_saving_a_model_is_named_and_keeps_the_saved_one(tmp_path, monkeypatch):
    """The model's weights go through the same atomic writer: a full disk names model.safetensors, and the
    folder saved before is intact."""
    import builtins

    from csdn import CSDN, CSDNConfig
    from csdn.errors import DiskFullError
    from csdn.io import safetensors as safetensors_io

    model = CSDN(CSDNConfig.tiny())
    model.save_pretrained(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}

    def limited_open(path, mode="r", *args, **kwargs):
        handle = builtins.open(path, mode, *args, **kwargs)
        return _FullDisk(handle, 10_000) if mode == "wb" else handle

    monkeypatch.setattr(safetensors_io, "open", limited_open, raising=False)
    weights = tmp_path / "model" / "model.safetensors"
    with pytest.raises(DiskFullError, match=rf"cannot write {weights}: no space left on its disk"):
        model.save_pretrained(tmp_path / "model")
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before


# ---------------------------------------------------------------------------- class 8: bounded arguments


def _limited_memory_run(argv: list[str], tmp_path: Path):
    """``csdn ARGV`` in a child process allowed 3 GB of address space, as a small machine would have:
    a request that allocates before checking is killed there (rc 137 or a MemoryError), never refused."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    env = {**os.environ, "PYTHONPATH": str(Path(csdn.__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "csdn", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        preexec_fn=limit,
        cwd=tmp_path,
    )


SYNTH_REFUSALS = [
    (
        "sysu",
        ["--size", "100000", "100000"],
        r"--size 100000 100000 is too large: 10,000,000,000 pixels, over the limit of 1,048,576 \(1024 x 1024\), "
        r"since drawing needs about 1.1 KB of memory per pixel",
    ),
    ("regdb", ["--size", "2048", "1024"], r"--size 2048 1024 is too large: .* over the limit of 1,048,576"),
    (
        "sysu",
        ["--train-ids", "9000", "--images", "100"],
        r"--train-ids \+ --test-ids = 9,016 identities with 6 camera series of 100 images \(--images\) each would "
        r"write up to 5,409,600 images, over the limit of 1,000,000",
    ),
    ("regdb", ["--train-ids", "100000000"], r"100,000,016 identities .* over the limit of 1,000,000"),
    ("llcm", ["--images", "10000000000"], r"up to 8,160,000,000,000 images, over the limit of 1,000,000"),
    ("regdb", ["--trials", "100000"], r"--trials must be at most 1000 \(RegDB uses 10\), got 100,000"),
    ("llcm", ["--cameras", "100000"], r"--cameras must be 2..9 .*got 100000"),
    ("sysu", ["--images", "0"], r"--images must be a positive integer, got 0"),
]


@pytest.mark.parametrize("layout, argv, message", SYNTH_REFUSALS)
def test_synth_refuses_sizes_it_cannot_hold_in_one_line(tmp_path, capsys, layout, argv, message):
    import re

    code = cli.main(["synth", "--layout", layout, "--root", str(tmp_path / "tree"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("csdn: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("layout, argv, message", [SYNTH_REFUSALS[0], SYNTH_REFUSALS[3]], ids=["size", "ids"])
def test_synth_refuses_before_allocating_on_a_machine_with_little_memory(tmp_path, layout, argv, message):
    import re

    result = _limited_memory_run(["synth", "--layout", layout, "--root", "tree", "--quiet", *argv], tmp_path)
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert result.stderr.count("\n") == 1 and re.search(message, result.stderr), result.stderr
    assert not list(tmp_path.iterdir())


def test_the_writers_and_the_renderer_bound_their_sizes_in_python_too(tmp_path):
    from csdn.data.synthetic import render_person, sample_identity, write_llcm, write_regdb, write_sysu
    from csdn.errors import SettingError

    person = sample_identity(np.random.default_rng(0), 1)
    with pytest.raises(SettingError, match=r"size 4096 4096 is too large"):
        render_person(person, "visible", np.random.default_rng(0), (4096, 4096))
    with pytest.raises(SettingError, match=r"size 100000 100000 is too large"):
        write_sysu(tmp_path / "a", size=(100000, 100000))
    with pytest.raises(SettingError, match=r"images_per_modality\) each would write up to"):
        write_regdb(tmp_path / "b", images_per_modality=10**9)
    with pytest.raises(SettingError, match=r"num_trials must be at most 1000"):
        write_regdb(tmp_path / "c", num_trials=10**6)
    with pytest.raises(SettingError, match=r"num_cameras must be an integer"):
        write_llcm(tmp_path / "d", num_cameras="9")
    assert not list(tmp_path.iterdir())
    # the limits are not in the way of real sizes: the models' input size and a large crop draw fine
    assert render_person(person, "visible", np.random.default_rng(0), (512, 256)).size == (256, 512)


def test_export_refuses_an_agreement_check_too_large_to_hold(tmp_path, capsys):
    code = cli.main(
        ["export", "synthetic-tiny", str(tmp_path / "out"), "--precision", "fp16", "--verify-identities", "10000000"]
        + ["--quiet"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--verify-identities must be 10..2,000, got 10,000,000" in err and not (tmp_path / "out").exists()

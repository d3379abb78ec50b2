"""The extension points' tables: datasets and export formats are each named once, and every
consumer (training, evaluation, the CLI, the card, the runtime) reads the same table."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import csdn
from csdn.cli.app import build_parser
from csdn.data import DATASET_NAMES, READERS, DatasetReader, Sample, dataset_title, reader_for
from csdn.data.catalog import READER_CLASSES
from csdn.data.synthetic import LAYOUTS
from csdn.evaluation.metrics import METRICS
from csdn.export.formats import EXPORT_FORMATS
from csdn.io.card import dataset_title as card_title
from csdn.runtime.backends import BACKENDS
from csdn.runtime.metadata import ARTIFACT_SUFFIXES


def _choices(command: str, option: str) -> tuple:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


@pytest.mark.parametrize("reader", READER_CLASSES, ids=lambda cls: cls.name)
def test_every_reader_describes_itself_and_names_a_known_metric(reader):
    for attribute in ("name", "title", "aliases", "metric", "directions", "trials", "settings", "trial_bound"):
        assert hasattr(reader, attribute), f"{reader.__name__} lacks {attribute}"
    assert reader.metric in METRICS
    assert callable(reader.search)


def test_names_and_aliases_resolve_case_blind_and_never_collide():
    spellings = [s for cls in READER_CLASSES for s in (cls.name, *cls.aliases)]
    assert len(spellings) == len(set(spellings))
    assert reader_for(" SYSU-MM01 ") is reader_for("sysu") is READERS["sysumm01"]
    assert reader_for("market1501") is None


def test_the_cli_offers_exactly_the_registered_datasets():
    assert _choices("train", "--dataset") == DATASET_NAMES
    assert _choices("eval", "--dataset") == DATASET_NAMES
    assert set(_choices("synth", "--layout")) <= set(DATASET_NAMES) and LAYOUTS == _choices("synth", "--layout")


def test_card_titles_agree_with_the_registry():
    for cls in READER_CLASSES:
        for spelling in (cls.name, *cls.aliases):
            assert dataset_title(spelling) == cls.title
            if cls.name != "folder":  # the card titles benchmarks only
                assert card_title(spelling) == cls.title


class ToyReader:
    """A dataset added by a user: two identities, one image each per modality, stored as arrays."""

    name, title, aliases, metric, trial_bound = "toy", "Toy", (), "regdb", False
    directions, trials, settings = ("infrared->visible",), (0,), ()

    def __init__(self, root):
        self.root = root
        rng = np.random.default_rng(0)
        self.images = {
            m: [rng.integers(0, 255, (64, 32, 3), dtype=np.uint8) for _ in range(2)] for m in ("visible", "infrared")
        }

    def search(self, direction, trial):
        def rows(modality):
            return [Sample(f"{modality}{pid}.png", pid, 1 if modality == "visible" else 3, modality) for pid in (0, 1)]

        return rows("infrared"), rows("visible")


def test_a_registered_dataset_is_evaluated_by_name(monkeypatch, tiny_model, tmp_path):
    """Adding a dataset is a reader class and a table entry: evaluate() then finds it by name."""
    from PIL import Image

    reader = ToyReader(tmp_path)
    for modality, images in reader.images.items():
        for pid, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / f"{modality}{pid}.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(READERS, "toy", ToyReader)
    assert isinstance(reader, DatasetReader)
    result = csdn.evaluate(tiny_model, "toy", root=tmp_path, progress=False)
    assert result.dataset == "Toy"
    assert 0.0 <= result.searches[0].mean["rank1"] <= 1.0
    with pytest.raises(ValueError, match="unknown dataset 'toy2'"):
        csdn.evaluate(tiny_model, "toy2", root=tmp_path, progress=False)


def test_export_formats_the_runtime_and_the_cli_name_the_same_formats():
    assert set(EXPORT_FORMATS) == set(BACKENDS) == set(ARTIFACT_SUFFIXES)
    assert set(_choices("export", "--format")) == set(EXPORT_FORMATS)

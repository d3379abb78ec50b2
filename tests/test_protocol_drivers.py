"""Protocol drivers: ``csdn train --trials`` trains and scores each RegDB split in its own folder and
writes the averaged table (resuming where it stopped), and ``csdn eval --table`` scores every
SYSU-MM01 setting (all/indoor x single/multi-shot) in one run, each image embedded once."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from vireid_trees import CountingModel, make_llcm, make_regdb, make_sysu

import csdn
from csdn import cli
from csdn.evaluation.protocol import evaluate_table
from csdn.train.trials import parse_trials

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_RUN = [
    "--init", "tiny", "--epochs-stage1", "1", "--epochs-stage2", "1", "--epochs-stage3", "1",
    "--steps-per-epoch", "1", "--ids-per-batch", "2", "--images-per-id", "2",
    "--stage1-batch-size", "4", "--stage2-batch-size", "4", "--no-progress",
]  # fmt: skip


def test_trial_lists_read_ranges_and_lists():
    assert parse_trials("1-10") == list(range(1, 11))
    assert parse_trials("1,3,5-7") == [1, 3, 5, 6, 7]
    assert parse_trials(" 4 , 2-3, 3") == [4, 2, 3]
    for text, problem in (("3-1", "runs backwards"), ("1,x", "cannot read 'x'"), ("", "cannot read ''")):
        with pytest.raises(ValueError, match=problem):
            parse_trials(text)


# ---------------------------------------------------------------------------------------------- csdn train --trials
@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory) -> Path:
    return make_regdb(tmp_path_factory.mktemp("regdb") / "RegDB", trials=3, ids=8, images=3)


def _train(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", "regdb", "--root", str(root), "--output", str(out), *TINY_RUN, *extra]


def test_train_trials_scores_each_split_on_its_own_and_averages_them(regdb_root, tmp_path, capsys):
    out = tmp_path / "run"
    # interrupted in trial 1 (after one epoch), then the same command without the limit finishes the loop
    assert cli.main([*_train(regdb_root, out, "--trials", "1,3", "--stop-after", "1")]) == 0
    stopped = capsys.readouterr()
    assert "trial 1 stopped before its schedule ended" in stopped.err and not (out / "trials.csv").exists()
    assert not (out / "trial_1" / "model").exists() and not (out / "trial_3").exists()
    assert cli.main([*_train(regdb_root, out, "--trials", "1", "3")]) == 0  # eval's form of a list works too
    printed = capsys.readouterr().out

    per_trial = {}
    for trial in (1, 3):
        folder = out / f"trial_{trial}"
        meta = json.loads((folder / "model" / "config.json").read_text())["meta"]
        assert (meta["dataset"], meta["trial"]) == ("regdb", trial)  # each split trained as itself
        saved = json.loads((folder / "evaluation.json").read_text())
        assert saved["settings"]["trials"] == [trial]
        result = csdn.evaluate(csdn.load(folder / "model"), "regdb", regdb_root, progress=False)
        per_trial[trial] = result
        assert result.settings["trials"] == [trial]
        for direction in ("visible->infrared", "infrared->visible"):
            search = next(s for s in saved["searches"] if s["direction"] == direction)
            assert search["mean"]["mAP"] == pytest.approx(result[direction].mAP)

    rows = list(csv.DictReader(io.StringIO((out / "trials.csv").read_text())))
    assert [row["setting"] for row in rows] == ["Visible to Thermal", "Thermal to Visible"]
    for row, direction in zip(rows, ("visible->infrared", "infrared->visible")):
        assert row["trials"] == "1 3"
        for name in ("rank1", "rank10", "rank20", "mAP", "mINP"):
            values = [100 * per_trial[t][direction].mean[name] for t in (1, 3)]
            assert float(row[name]) == pytest.approx(np.mean(values), abs=0.006)
            assert float(row[f"{name}_std"]) == pytest.approx(np.std(values, ddof=1), abs=0.006)
    markdown = (out / "trials.md").read_text()
    assert markdown in printed  # the table on stdout is the Markdown file
    assert "mean ± std over 2 trial(s) (1, 3)" in markdown
    assert "| Setting | Rank-1 | Rank-10 | Rank-20 | mAP | mINP |" in markdown
    first = f"{float(rows[0]['rank1']):.2f} ± {float(rows[0]['rank1_std']):.2f}"
    assert f"| Visible to Thermal | {first} |" in markdown

    # a rerun skips the finished trials: nothing is trained or evaluated again, the table is the same
    logs = {t: (out / f"trial_{t}" / "log.jsonl").stat().st_mtime_ns for t in (1, 3)}
    assert cli.main([*_train(regdb_root, out, "--trials", "1,3")]) == 0
    again = capsys.readouterr()
    assert again.err.count("was finished earlier") == 2 and "training in" not in again.err
    assert {t: (out / f"trial_{t}" / "log.jsonl").stat().st_mtime_ns for t in (1, 3)} == logs
    assert (out / "trials.md").read_text() == markdown and markdown in again.out


@pytest.mark.parametrize(
    "argv,problem",
    [
        (["--trials", "1-2", "--trial", "2"], "--trial and --trials exclude each other"),
        (["--trials", "2-11"], "trial"),
        (["--trials", "2-"], "cannot read '2-'"),
    ],
)
def test_train_trials_refuses_bad_lists_before_training(regdb_root, tmp_path, capsys, argv, problem):
    out = tmp_path / "run"
    assert cli.main([*_train(regdb_root, out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and err.count("\n") == 1 and problem in err
    assert not out.exists()


def test_train_trials_is_for_regdb(tmp_path, capsys):
    root = make_sysu(tmp_path / "sysu")
    argv = ["train", "--dataset", "sysu", "--root", str(root), "--output", str(tmp_path / "run"), *TINY_RUN]
    assert cli.main([*argv, "--trials", "1-2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RegDB's protocol" in err and "csdn eval" in err


# ------------------------------------------------------------------------------------------------ csdn eval --table
@pytest.fixture
def sysu_root(tmp_path) -> Path:
    return make_sysu(tmp_path / "sysu", test_ids=(3, 5, 7, 9, 11), images=4, absent=[(5, 2), (9, 6)])


CELLS = [("all", 1), ("all", 10), ("indoor", 1), ("indoor", 10)]
LABELS = [
    "All-Search, Single-shot",
    "All-Search, Multi-shot",
    "Indoor-Search, Single-shot",
    "Indoor-Search, Multi-shot",
]


def test_the_sysu_table_holds_the_four_cells_each_image_embedded_once(sysu_root):
    model = CountingModel()
    table = evaluate_table(model, "sysu", sysu_root, trials=[0, 1, 2], progress=False)
    assert set(model.counts.values()) == {1} and sorted(m for m, _ in model.calls) == ["infrared", "visible"]
    assert [row.label for row in table.rows] == LABELS
    for row, (mode, shots) in zip(table.rows, CELLS):
        alone = csdn.evaluate(CountingModel(), "sysu", sysu_root, mode=mode, shots=shots, trials=[0, 1, 2])
        assert row.settings == {"mode": mode, "shots": shots, "direction": "infrared->visible"}
        assert row.trials == [0, 1, 2]
        for name in ("rank1", "rank10", "rank20", "mAP", "mINP"):
            assert row.search.mean[name] == pytest.approx(alone.mean[name])
            assert row.search.std[name] == pytest.approx(alone.std[name])
    assert table.rows[0].search.trials[0].num_gallery < table.rows[1].search.trials[0].num_gallery  # multi-shot


def test_the_llcm_table_names_each_direction_even_when_one_is_chosen(tmp_path):
    root = make_llcm(tmp_path / "llcm")
    both = evaluate_table(CountingModel(), "llcm", root, trials=[0], progress=False)
    labels = ["Infrared to Visible, Single-shot", "Visible to Infrared, Single-shot"]
    assert [row.label for row in both.rows] == [*labels, *(label.replace("Single", "Multi") for label in labels)]
    one = evaluate_table(CountingModel(), "llcm", root, trials=[0], direction="v2i", progress=False)
    assert [row.label for row in one.rows] == ["Visible to Infrared, Single-shot", "Visible to Infrared, Multi-shot"]
    assert str(one).startswith("LLCM, Visible to Infrared: 1 trial(s) (0), in %")


def _eval(root: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", extra[0], "--root", str(root), "--model", "my-model", "--quiet", *extra[1:]]


def test_cli_eval_table_prints_the_four_cells_and_writes_json(sysu_root, tmp_path, monkeypatch, capsys):
    import csdn.hub.loading

    monkeypatch.setattr(csdn.hub.loading, "load", lambda name, **kw: CountingModel())
    out = tmp_path / "table.json"
    assert cli.main(_eval(sysu_root, "sysu", "--table", "--trials", "0", "1", "--json", str(out))) == 0
    printed = capsys.readouterr().out
    assert "SYSU-MM01, Infrared to Visible: mean ± std over 2 trial(s) (0, 1), in %" in printed
    for label in LABELS:
        assert f"| {label} | " in printed
    saved = json.loads(out.read_text())
    assert [row["label"] for row in saved["rows"]] == LABELS
    expected = csdn.evaluate(CountingModel(), "sysu", sysu_root, mode="indoor", shots=10, trials=[0, 1])
    assert saved["rows"][3]["mean"]["mAP"] == pytest.approx(expected.mAP)


@pytest.mark.parametrize(
    "extra,problem",
    [
        (("sysu", "--table", "--mode", "indoor"), "--table scores every --mode and --shots setting"),
        (("regdb", "--table"), "single setting"),
    ],
)
def test_cli_eval_table_refusals_are_one_line(sysu_root, tmp_path, monkeypatch, capsys, extra, problem):
    import csdn.hub.loading

    monkeypatch.setattr(csdn.hub.loading, "load", lambda name, **kw: CountingModel())
    root = make_regdb(tmp_path / "regdb") if extra[0] == "regdb" else sysu_root
    assert cli.main(_eval(root, *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("csdn: error: ") and err.count("\n") == 1 and problem in err

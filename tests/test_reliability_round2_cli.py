"""Issue 22, class 11: every command-line failure is one line ``csdn: error: ...`` with exit status 2:
argparse's usage errors (missing arguments, bad choices, non-numbers) as much as csdn's own, multi-line
messages (dataset layouts, offline pretrained weights) included; the usage stays one --help away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from csdn import cli
from csdn.cli.app import build_parser, one_line

REPOSITORY = Path(__file__).resolve().parent.parent
COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # every registered command


def _fails_in_one_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and err.startswith("csdn: error: "), err
    return err


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_flag_of_every_command_is_one_line_naming_the_command(capsys, command):
    err = _fails_in_one_line(capsys, [command, "--no-such-flag"])
    assert f"csdn: error: {command}: " in err and f"(see csdn {command} --help)" in err and "usage:" not in err


@pytest.mark.parametrize(
    "argv, says",
    [
        (["match"], "the following arguments are required: query, gallery, --output"),
        (["match", "q.npy", "g.npy", "--output", "r.csv", "--topk", "ten"], "argument --topk: invalid int value"),
        (["eval", "--dataset", "nope"], "argument --dataset: invalid choice: 'nope'"),
        (["train", "--stage1-lr", "fast"], "invalid float value"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, says):
    assert says in _fails_in_one_line(capsys, argv)


def test_help_still_shows_the_usage(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["match", "--help"])
    assert done.value.code == 0 and "usage: csdn match" in capsys.readouterr().out


def test_a_dataset_layout_error_is_one_line(capsys, tmp_path):
    assert cli.main(["eval", "--dataset", "sysu", "--root", str(tmp_path), "--model", "synthetic-tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing camera folder" in err and "Expected layout" in err


def test_offline_pretrained_weights_are_one_line_with_the_command_quoted(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CSDN_"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPOSITORY)}
    (tmp_path / "a.png").write_bytes(b"")
    done = subprocess.run(
        [sys.executable, "-m", "csdn", "embed", str(tmp_path), "--model", "sysu", "--modality", "visible"]
        + ["--output", str(tmp_path / "e.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "then run `csdn convert model_119.pth out/ --dataset sysu` and load" in done.stderr


def test_one_line_joins_sentences_and_quotes_commands():
    assert one_line("first\nSecond.\n    csdn go\nthen") == "first. Second. `csdn go` then"
    assert one_line("none could be read:\n  a.png: broken\n  b.png: empty") == (
        "none could be read: `a.png: broken` `b.png: empty`"
    )


@pytest.mark.parametrize(
    "argv, says",
    [
        (["convert", "model.pth", "out", "--dataset", "x"], "argument --dataset: invalid choice: 'x'"),
        (["publish", "model", "acme/m", "--dataset", "sysu", "--root", "r", "--license", "!!"], "is not a licence id"),
    ],
)
def test_convert_dataset_and_publish_license_are_checked(capsys, argv, says):
    assert says in _fails_in_one_line(capsys, argv)


def test_load_none_is_a_clear_type_error():
    import csdn

    with pytest.raises(TypeError, match="name_or_path must be a registry name, an 'hf-hub:org/name' id or a local"):
        csdn.load(None)

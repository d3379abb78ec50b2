"""Issue 22, class 5 (the settings part): a learning rate, weight or factor of NaN or infinity is refused
by name, in Python and on the command line, before any data is read."""

from __future__ import annotations

import pytest

from csdn import cli
from csdn.train.config import TrainConfig


@pytest.mark.parametrize("name", ["stage1_lr", "stage2_lr", "stage3_lr", "min_lr", "gamma", "msel_weight"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_settings_are_refused(name, value):
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0, got {value}"):
        TrainConfig(**{name: value})


def test_the_cli_refuses_stage1_lr_nan_in_one_line(capsys, tmp_path):
    code = cli.main(
        ["train", "--dataset", "sysu", "--root", str(tmp_path / "nowhere"), "--output", str(tmp_path / "run")]
        + ["--init", "tiny", "--stage1-lr", "nan"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == "csdn: error: --stage1-lr must be a finite number >= 0, got nan\n"
    assert not (tmp_path / "run").exists()

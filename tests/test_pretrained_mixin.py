"""The model's own ``from_pretrained`` / ``save_pretrained`` / ``push_to_hub``, in the shape of
huggingface_hub's ModelHubMixin, over the one module that reads and writes the saved-model format."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import csdn
from csdn.model import CSDN

PACKAGE = Path(__file__).resolve().parent.parent / "csdn"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    theirs = b.state_dict()
    return all(torch.equal(tensor, theirs[key]) for key, tensor in a.state_dict().items())


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_from_pretrained_reads_folders_and_registry_names(tiny_model, tmp_path):
    folder = tiny_model.save_pretrained(tmp_path / "m")
    model = CSDN.from_pretrained(folder)
    assert isinstance(model, CSDN) and not model.training and same_weights(model, tiny_model)
    assert same_weights(CSDN.from_pretrained("synthetic-tiny", progress=False), csdn.load("synthetic-tiny"))
    assert csdn.CSDN.from_pretrained(folder, device="cpu").config == tiny_model.config


def test_from_pretrained_refuses_a_model_of_another_class(tiny_model, tmp_path):
    class Special(CSDN):
        """Not the class the saved architecture maps to."""

    folder = tiny_model.save_pretrained(tmp_path / "m")
    with pytest.raises(TypeError, match="holds a CSDN model \\(architecture 'csdn_tiny'\\), not a Special"):
        Special.from_pretrained(folder)


def test_push_to_hub_as_a_method_round_trips_through_the_hub(tiny_model, fake_hub):
    commit = tiny_model.push_to_hub("acme/mixin", token="hf_test", commit_message="by the method")
    assert commit.oid == fake_hub.branches["acme/mixin"]["main"]
    assert set(fake_hub.files("acme/mixin")) == {"model.safetensors", "config.json", "README.md"}
    assert same_weights(CSDN.from_pretrained("hf-hub:acme/mixin"), tiny_model)
    with pytest.raises(ValueError, match="org/name"):
        tiny_model.push_to_hub("no-namespace")


def test_the_format_module_and_the_mixin_name_no_model_and_the_model_imports_only_the_mixin():
    pretrained = imported_modules(PACKAGE / "io" / "pretrained.py")
    assert not [name for name in pretrained if name.startswith(("csdn.model", "csdn.hub"))]
    assert "CSDN(" not in (PACKAGE / "io" / "pretrained.py").read_text(encoding="utf-8")
    network = imported_modules(PACKAGE / "model" / "network.py")
    assert {name for name in network if name.startswith("csdn.io")} == {"csdn.io.pretrained.PretrainedMixin"}

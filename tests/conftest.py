"""Shared fixtures: small random-weight models built through the same code as the full model,
a small synthetic SYSU-MM01 tree, and a local stand-in for the Hugging Face Hub."""

from __future__ import annotations

import huggingface_hub
import huggingface_hub.constants as hf_constants
import pytest
import torch
from hub_server import FakeHub

from csdn import CSDNConfig
from csdn.data.synthetic import write_sysu
from csdn.model.network import CSDN


@pytest.fixture
def tiny_model() -> CSDN:
    """A fresh tiny CSDN (64x32 input, 8 identities) in eval mode, with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = CSDN(CSDNConfig.tiny())
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="session")
def rn50_model() -> CSDN:
    """The full-size CSDN-RN50 (random weights), built once per session."""
    torch.manual_seed(0)
    return CSDN(CSDNConfig.rn50()).eval()


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A :class:`FakeHub` on 127.0.0.1 that huggingface_hub talks to, with an empty Hub cache.

    huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` once, at
    import, into ``huggingface_hub.constants``; its download and upload code reads those
    module attributes on every call, so they are patched here. The environment variables
    are set as well, for subprocesses started by the test. Files huggingface_hub keeps
    beside its cache (e.g. the agent-harness list it fetches from the endpoint) go to
    ``tmp_path`` too, never to the real home folder.
    """
    # huggingface_hub keeps one HTTP client with pooled keep-alive connections for the process: a
    # connection to an earlier test's server (whose port the new one may reuse) must not be picked up
    huggingface_hub.close_session()
    hub = FakeHub()
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf-home" / ".agent_harnesses.json"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(hf_constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    yield hub
    hub.close()
    huggingface_hub.close_session()


@pytest.fixture
def hub_offline(monkeypatch):
    """Switch huggingface_hub to offline mode, as ``HF_HUB_OFFLINE=1`` at import would."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models train several times faster on one thread, most of all on a busy machine.

    Modules that train use it with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_sysu(tmp_path_factory):
    """A small synthetic SYSU-MM01 tree in the real layout (2 train, 6 test identities), read-only for tests."""
    root = tmp_path_factory.mktemp("tiny-sysu") / "sysu"
    write_sysu(root, 2, 6, 2, seed=3)
    return root

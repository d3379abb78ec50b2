"""Access to OpenAI's CLIP model code and BPE tokenizer without importing torchvision.

The ``openai-clip`` distribution ships ``clip/model.py`` (the ModifiedResNet and
text-transformer building blocks) and ``clip/simple_tokenizer.py`` (the BPE
tokenizer and its vocabulary), but its package ``__init__`` imports torchvision,
which is not installable alongside every torch build. This module is the one
place that works around that: it locates the installed ``clip`` package without
executing its ``__init__`` and loads the two plain modules from their files.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType


def _clip_package_dir() -> Path:
    spec = importlib.util.find_spec("clip")  # locating a top-level package does not run it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("OpenAI's CLIP code is missing; install it with `pip install openai-clip`")
    return Path(list(spec.submodule_search_locations)[0])


def _load(stem: str) -> ModuleType:
    path = _clip_package_dir() / f"{stem}.py"
    if not path.is_file():
        raise ImportError(f"the installed openai-clip package has no {path.name} ({path})")
    name = f"csdn._openai_clip_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@cache
def clip_model() -> ModuleType:
    """OpenAI's ``clip/model.py``: Bottleneck, AttentionPool2d, Transformer, LayerNorm, ..."""
    return _load("model")


@cache
def tokenizer():
    """A shared instance of OpenAI's BPE ``SimpleTokenizer``."""
    return _load("simple_tokenizer").SimpleTokenizer()


def tokenize(text: str, context_length: int = 77) -> list[int]:
    """Token ids of ``text`` with start/end markers, zero-padded to ``context_length``."""
    tok = tokenizer()
    ids = [tok.encoder["<|startoftext|>"], *tok.encode(text), tok.encoder["<|endoftext|>"]]
    if len(ids) > context_length:
        raise ValueError(f"{text!r} is {len(ids)} tokens long; the context holds {context_length}")
    return ids + [0] * (context_length - len(ids))

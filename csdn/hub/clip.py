"""Build a CSDN model from OpenAI CLIP weights.

CLIP's RN50 becomes CSDN's image and text towers: both modality stems start as
CLIP's stem, the trunk is CLIP's layer1-4 (layer4 at stride 1), the attention
pool's positional embedding is resized to the trunk's feature grid, and the
prompt template's token embeddings come from CLIP's token table. Heads, identity
prompts and the fusion module keep their random initialisation. The name map is written for
the CLIP-ResNet layout (:data:`csdn.config.CLIP_RESNET_LAYOUT`); the config's architecture
(inferred from the tensors' sizes) must map to a class of that layout.

Weight sources: a name such as ``"RN50"``, downloaded through huggingface_hub from the
registry's ``clip`` entry (by default OpenAI's RN50 as open_clip publishes it on the Hub,
``timm/resnet50_clip.openai``, at a pinned revision, SHA-256 checked), so ``HF_ENDPOINT``
mirrors, ``HF_HUB_OFFLINE``, the shared Hub cache and ``revision=`` apply; or, with
``source="openai"``, the same weights from OpenAI's own URL; or a local file: a TorchScript
archive as OpenAI distributes it, or a plain state dict (``.pt``/``.bin``/``.safetensors``)
with OpenAI or open_clip key names.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from csdn.config import CLIP_RESNET_LAYOUT, CSDNConfig, infer_architecture
from csdn.errors import CheckpointError, CLIPWeightsError, cli_flag
from csdn.hub.architectures import model_class
from csdn.hub.registry import RegistryLike, open_registry
from csdn.hub.transfer import discard_cached, hub_content_hash, hub_download
from csdn.io.safetensors import InvalidSafetensors, parse_header
from csdn.model.clip_code import tokenize
from csdn.model.layers import resize_positional_embedding
from csdn.model.network import CSDN
from csdn.system.fileio import atomic_write, sha256_file
from csdn.system.torchfile import is_torchscript, load_torch_file

# OpenAI publishes each checkpoint under a URL whose second-to-last part is the file's SHA-256.
OPENAI_URLS = {
    "RN50": "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
}

CLIP_SOURCES = ("hub", "openai")  # where a CLIP name such as "RN50" is downloaded from

_STEM_KEYS = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3")


def _as_init() -> str:
    """On the command line the CLIP weights come from ``--init``: say so where a message tells what to pass."""
    flag = cli_flag("init")
    return f" to {flag}" if flag else ""


def cache_dir() -> Path:
    """Where downloaded CLIP weights are kept: ``$CSDN_CACHE`` or ``~/.cache/csdn``."""
    root = os.environ.get("CSDN_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "csdn"
    return Path(root)


def download_openai(name: str = "RN50", *, root: str | Path | None = None, progress: bool = True) -> Path:
    """Download OpenAI's checkpoint ``name`` into the cache, verifying the SHA-256 its URL names.

    A cached file is reused only if its checksum matches; the download goes to a
    temporary file that is renamed into place after verification, so an
    interrupted or corrupted download never poisons the cache.
    """
    if name not in OPENAI_URLS:
        raise ValueError(f"unknown CLIP model {name!r}; known: {', '.join(OPENAI_URLS)}")
    url = OPENAI_URLS[name]
    expected = url.split("/")[-2]
    target = Path(root or cache_dir() / "clip") / Path(url).name
    if target.is_file() and sha256_file(target) == expected:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)

    def fetch(temp: Path) -> None:
        try:
            response = urllib.request.urlopen(url, timeout=30)
        except (urllib.error.URLError, OSError) as err:
            raise CLIPWeightsError(
                f"could not download CLIP {name} from {url} ({err}). Without network access, "
                f"download {Path(url).name} elsewhere and pass its local path{_as_init()} instead of {name!r}"
            ) from err
        with (
            response,
            open(temp, "wb") as out,
            tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None,
                unit="B",
                unit_scale=True,
                desc=f"CLIP {name}",
                disable=not progress,
            ) as bar,
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))
        actual = sha256_file(temp)
        if actual != expected:
            raise CLIPWeightsError(
                f"downloaded CLIP {name} has SHA-256 {actual}, expected {expected}; the file was discarded, try again"
            )

    atomic_write(target, fetch)
    return target


def download_from_hub(
    name: str = "RN50",
    *,
    revision: str | None = None,
    registry: RegistryLike = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    force_download: bool = False,
    progress: bool = True,
    timeout: float | None = None,
) -> Path:
    """The CLIP weights ``name`` from the Hub file the registry pins, through huggingface_hub's cache.

    At the pinned revision the file must have the registry's SHA-256; at another ``revision``
    it must have the SHA-256 the Hub cache names it by (the LFS object id the Hub reported).
    A file that does not is refused, naming the cached copy to delete.
    """
    entry = open_registry(registry).clip_weights(name)
    revision = revision or entry.revision

    def unavailable(reason: str) -> str:
        openai = "" if cli_flag("init") else ", use source='openai' for OpenAI's own URL"
        return (
            f"cannot get the CLIP {name} weights ({entry.filename} of {entry.repo_id}, revision {revision}): "
            f"{reason}. Download them where there is network (or set HF_ENDPOINT to a mirror){openai}, or pass "
            f"the path of a local CLIP file{_as_init()}"
        )

    path = hub_download(
        entry.repo_id,
        entry.filename,
        revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
        progress=progress,
        unavailable=unavailable,
        timeout=timeout,
    )
    named = hub_content_hash(path)
    expected = entry.sha256 if revision == entry.revision else named
    if expected is not None:
        actual = sha256_file(path)
        if actual != expected or (named is not None and named != expected):
            corrupt = named is not None and actual != named and discard_cached(path)  # not what the Hub sent
            then = (
                "the corrupted copy was removed from the Hub cache, so the next call downloads it again"
                if corrupt
                else f"Delete {path.resolve()} and download again (force_download=True)"
            )
            raise CLIPWeightsError(
                f"the CLIP {name} weights in {path} have SHA-256 {actual}, but "
                f"{'the registry pins' if expected == entry.sha256 else 'the Hub reported'} {expected} "
                f"({entry.repo_id}@{revision}); they were not used. {then}, and check HF_ENDPOINT if it points "
                "at a mirror"
            )
    return path


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read CLIP weights from a TorchScript archive or a plain state dict, as float32 tensors.

    A file that cannot be read raises :class:`CLIPWeightsError` naming it and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights not found: {path}")
    expected = "expected CLIP weights: OpenAI's RN50.pt, or an open_clip/timm state dict (.pt, .bin, .safetensors)"
    if path.suffix == ".safetensors":
        state = _read_safetensors(path, expected)
    elif is_torchscript(path):
        try:
            with warnings.catch_warnings():  # OpenAI ships TorchScript; torch now flags jit.load as deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as err:  # torch's errors for a damaged archive can be empty
            raise CLIPWeightsError(
                f"cannot read the TorchScript archive {path} ({type(err).__name__}; damaged or truncated?); {expected}"
            ) from err
    else:
        try:
            state = load_torch_file(path, "CLIP weights file")
        except CheckpointError as err:
            raise CLIPWeightsError(f"{err}; {expected}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CLIPWeightsError(f"{path} does not hold a state dict; {expected}")
    return _canonical_names({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})


def _read_safetensors(path: Path, expected: str) -> Mapping[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        parse_header(path)
        return load_file(str(path))
    except InvalidSafetensors as err:
        raise CLIPWeightsError(f"{path} is not a valid safetensors file: {err}; {expected}") from None
    except (SafetensorError, OSError) as err:
        raise CLIPWeightsError(f"cannot read the tensors of {path} ({err}); {expected}") from err


def _canonical_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI key names from OpenAI, open_clip or DataParallel-saved checkpoints."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "text."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value.float() if value.is_floating_point() else value
    return out


def config_from_clip(state: Mapping[str, torch.Tensor], **overrides) -> CSDNConfig:
    """The CSDN config whose towers have the sizes of a CLIP ModifiedResNet state dict."""
    required = (
        "visual.layer1.0.conv1.weight",
        "visual.attnpool.c_proj.weight",
        "token_embedding.weight",
        "ln_final.weight",
        "text_projection",
        "positional_embedding",
    )
    missing = [key for key in required if key not in state]
    if missing:
        hint = " (a ViT CLIP model? CSDN needs a ResNet one such as RN50)" if "visual.proj" in state else ""
        raise CLIPWeightsError(f"not a CLIP ResNet state dict{hint}: missing {', '.join(missing)}")
    layers = tuple(
        len({key.split(".")[2] for key in state if key.startswith(f"visual.layer{index}.")}) for index in range(1, 5)
    )
    width = state["visual.layer1.0.conv1.weight"].shape[0]
    text_width = state["ln_final.weight"].shape[0]
    settings: dict[str, Any] = dict(
        vision_layers=layers,
        vision_width=width,
        vision_heads=width * 32 // 64,
        embed_dim=state["visual.attnpool.c_proj.weight"].shape[0],
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        text_width=text_width,
        text_heads=text_width // 64,
        text_layers=len({key.split(".")[2] for key in state if key.startswith("transformer.resblocks.")}),
    )
    settings.update(overrides)
    settings.setdefault("architecture", infer_architecture(settings))
    return CSDNConfig(**settings)


def clip_to_csdn_state(state: Mapping[str, torch.Tensor], config: CSDNConfig) -> dict[str, torch.Tensor]:
    """Map CLIP tensors onto CSDN names: stems, trunk, attention pool, text encoder and prompt templates."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("visual.layer"):
            out["trunk." + key[len("visual.") :]] = value
        elif key.startswith("visual.attnpool."):
            name = key[len("visual.attnpool.") :]
            if name == "positional_embedding":
                value = resize_positional_embedding(value, config.feature_grid)
            out["attnpool." + name] = value
        elif key.startswith("visual.") and key.split(".")[1] in _STEM_KEYS:
            for stem in ("stem_visible", "stem_infrared"):
                out[f"{stem}.{key[len('visual.') :]}"] = value.clone()
        elif key.startswith(("transformer.", "ln_final.")) or key in ("positional_embedding", "text_projection"):
            out["text_encoder." + key] = value
    tokens = torch.tensor(tokenize(config.prompt_template, config.context_length))
    embedded = state["token_embedding.weight"][tokens].unsqueeze(0)
    split = 5 + config.num_prompt_tokens
    for learner in ("prompt_visible", "prompt_infrared"):
        out[f"{learner}.token_prefix"] = embedded[:, :5].clone()
        out[f"{learner}.token_suffix"] = embedded[:, split:].clone()
    return out


def from_clip(
    weights: str | Path = "RN50",
    *,
    num_classes: int = 395,
    image_size: tuple[int, int] = (288, 144),
    source: str = "hub",
    revision: str | None = None,
    registry: RegistryLike = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    timeout: float | None = None,
    progress: bool = True,
    **config_overrides,
) -> CSDN:
    """A CSDN model initialised from CLIP ResNet weights (``"RN50"`` or a local file).

    ``source``: where a name is downloaded from, ``"hub"`` (default; see
    :func:`download_from_hub`, which ``revision``, ``registry``, ``cache_dir``,
    ``local_files_only`` and ``timeout`` go to) or ``"openai"`` (OpenAI's URL, see
    :func:`download_openai`). Everything CLIP provides is loaded and checked by name; only
    the parts CLIP has no counterpart for (heads, identity prompts, SII fusion) stay random.
    """
    if source not in CLIP_SOURCES:
        raise ValueError(f"source must be one of {', '.join(CLIP_SOURCES)}, got {source!r}")
    name = str(weights)
    opened = open_registry(registry)
    known = opened.clip_entries if source == "hub" else OPENAI_URLS
    path = Path(name).expanduser()
    named = not path.exists() and name in known  # a name to download; anything else is a local file
    if not path.exists() and not named and not path.suffix and "/" not in name and os.sep not in name:
        raise ValueError(
            f"unknown CLIP weights {name!r} for source={source!r} (known: {', '.join(sorted(known))}); "
            "or pass a local CLIP file"
        )
    if named and source == "hub":
        path = download_from_hub(
            name,
            revision=revision,
            registry=opened,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            progress=progress,
            timeout=timeout,
        )
    elif named:
        if revision is not None:
            raise ValueError("revision= applies to source='hub' only; OpenAI's URL has no revisions")
        path = download_openai(name, progress=progress)
    state = read_clip_state_dict(path)
    try:
        config = config_from_clip(state, num_classes=num_classes, image_size=image_size, **config_overrides)
    except CLIPWeightsError as err:  # say which file: it may be any file the user named
        raise CLIPWeightsError(f"{path}: {err}; pass CLIP RN50 weights{_as_init()} (e.g. OpenAI's RN50.pt)") from None
    cls = model_class(config.architecture)
    if getattr(cls, "layout", None) != CLIP_RESNET_LAYOUT:
        raise CLIPWeightsError(
            f"architecture {config.architecture!r} ({cls.__name__}) does not have CLIP's ResNet layout, so CLIP "
            "weights have no names in it; start it from random weights (csdn.create_model) instead"
        )
    model = cls(config)
    mapped = clip_to_csdn_state(state, config)
    own = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    ]
    unknown = sorted(set(mapped) - set(own))
    if wrong or unknown:
        raise CLIPWeightsError(f"CLIP weights do not fit the CSDN model: {'; '.join(wrong + unknown)}")
    expected_from_clip = {k for k in own if k.startswith(("stem_", "trunk.", "attnpool.", "text_encoder.", "prompt_"))}
    expected_from_clip -= {f"{p}.cls_ctx" for p in ("prompt_visible", "prompt_infrared")}
    expected_from_clip = {k for k in expected_from_clip if not k.endswith("num_batches_tracked")}
    missing = sorted(expected_from_clip - set(mapped))
    if missing:
        raise CLIPWeightsError(f"CLIP weights lack {len(missing)} tensors CSDN needs, e.g. {', '.join(missing[:5])}")
    model.load_state_dict(mapped, strict=False)
    model.provenance.setdefault("init", f"CLIP {weights}")
    if named and name in opened.clip_entries:  # the Hub's name for these weights: the card's base_model
        model.provenance.setdefault("base_model", opened.clip_entries[name].repo_id)
    return model

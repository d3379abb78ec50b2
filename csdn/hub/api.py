"""Where weights come from and the entry points: ``load`` (registry name, ``hf-hub:`` repo or local
path), ``load_config`` and ``push_to_hub``.

A name is located (bundled with the package, downloaded from the Hub into its cache, or
read from disk), verified completely by :mod:`csdn.hub.verify`, and only then built into a
model. The saved-model format itself (``model.safetensors`` with the config in its
metadata, ``config.json``, a model card) is :mod:`csdn.io.pretrained`'s.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import silent_tqdm

from csdn.config import CSDNConfig
from csdn.device import resolve_device
from csdn.errors import HubError, HubTimeoutError, WeightsError, WeightsNotAvailableError
from csdn.fileio import atomic_write
from csdn.io.card import describe_architecture, render_model_card
from csdn.io.pretrained import (CONFIG_METADATA_KEY, CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME, package_version,
                                 save_pretrained)
from csdn.io.safetensors import TensorInfo, read_safetensors_header, write_safetensors
from csdn.hub.verify import WeightsFile, load_verified, verified_config
from csdn.model.network import CSDN
from csdn.hub.registry import (  # list_models and model_info are part of this module's API (csdn.list_models)
    AUTHORS_RELEASE,
    DEFAULT_MODEL,
    REPO_ID,
    SHA256_HEX,
    Registry,
    RegistryEntry,
    RegistryLike,
    list_models,
    model_info,
    open_registry,
)

__all__ = [
    "load", "load_config", "save_pretrained", "DEFAULT_MODEL", "push_to_hub", "upload_folder", "list_models", "model_info",
    "hub_timeout", "DEFAULT_HUB_TIMEOUT", "HUB_TIMEOUT_ENV",
    "WeightsError", "WeightsNotAvailableError",
    "atomic_write", "write_safetensors", "read_safetensors_header", "render_model_card", "describe_architecture",
    "WEIGHTS_NAME", "CONFIG_NAME", "MODEL_CARD_NAME", "CONFIG_METADATA_KEY", "TensorInfo",
]

HUB_PREFIX = "hf-hub:"
DEFAULT_HUB_TIMEOUT = 30.0  # seconds for a whole Hub call (all its requests and retries)
HUB_TIMEOUT_ENV = "CSDN_HUB_TIMEOUT"


# ---------------------------------------------------------------------------- bounded Hub calls
def hub_timeout(timeout: float | None = None) -> float:
    """The deadline of one Hub call: ``timeout``, else ``$CSDN_HUB_TIMEOUT``, else 30 seconds."""
    source = "timeout="
    if timeout is None:
        text = os.environ.get(HUB_TIMEOUT_ENV, "").strip()
        if not text:
            return DEFAULT_HUB_TIMEOUT
        source = f"the environment variable {HUB_TIMEOUT_ENV}"
        try:
            timeout = float(text)
        except ValueError:
            raise ValueError(f"{source} is {text!r}; set it to a number of seconds (e.g. 30), or unset it "
                             f"for the default {DEFAULT_HUB_TIMEOUT:g}") from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{source} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


# What huggingface_hub logs (and then retries) on its way to a failure, most telling first.
_OFFLINE_SIGNS = ("connection refused", "name or service not known", "temporary failure in name resolution",
                  "network is unreachable", "no route to host", "nodename nor servname", "connecterror",
                  "failed to establish a new connection", "getaddrinfo failed")


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline_reason(detail: str) -> str:
    return (f"the Hub at {_hub_endpoint()} cannot be reached (no network, or the address is wrong: {detail}); "
            "check the connection (and HF_ENDPOINT if set), or set HF_HUB_OFFLINE=1 to use the local cache")


def _logged_reason(messages: list[str]) -> str | None:
    """What went wrong, from huggingface_hub's retry warnings (the last one seen)."""
    told = [m for m in messages if m.strip() and not m.startswith("Retrying in")]
    if not told:
        return None
    last = told[-1].splitlines()[0].strip()
    lowered = last.lower()
    if any(sign in lowered for sign in _OFFLINE_SIGNS):
        return _offline_reason(last)
    if lowered.startswith("http error 5"):
        return f"the Hub kept answering with a server error ({last.split(' thrown')[0]})"
    if "error while downloading" in lowered:
        return f"the transfer was interrupted again and again ({last.split(': ', 1)[-1]})"
    return f"the last problem seen was: {last}"


class _Collect(logging.Filter):
    """Keeps huggingface_hub's retry warnings from one thread out of the terminal, and remembers them."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self.thread, self.messages = thread, []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread.ident:
            return True
        self.messages.append(record.getMessage())
        return False


def _within(deadline: float, call: Callable[[], Any], what: str,
            unreachable: type[Exception] = WeightsNotAvailableError) -> Any:
    """``call()`` in a worker thread, given up after ``deadline`` seconds with :class:`HubTimeoutError`.

    The HTTP client's own timeouts apply per request and restart with every retry and every
    byte received; this bounds the whole call. An abandoned download leaves only an
    ``.incomplete`` file in the Hub cache, which the next download resumes or replaces.
    huggingface_hub's retry warnings are kept off the terminal: a refused connection (no
    network) ends the call at once, and a timeout says the last problem they reported.
    """
    result: concurrent.futures.Future = concurrent.futures.Future()

    handlers = list(logging.getLogger("huggingface_hub").handlers)

    def work() -> None:
        try:
            result.set_result(call())
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
            result.set_exception(err)
        finally:  # here, not in the caller: an abandoned call stays quiet until it ends
            for handler in handlers:
                handler.removeFilter(collect)

    worker = threading.Thread(target=work, name="csdn-hub-call", daemon=True)
    collect = _Collect(worker)
    for handler in handlers:
        handler.addFilter(collect)
    worker.start()
    start = time.monotonic()
    while (left := deadline - (time.monotonic() - start)) > 0:
        try:
            return result.result(timeout=min(0.05, left))
        except concurrent.futures.TimeoutError:
            reason = _logged_reason(collect.messages)
            if reason is not None and reason.startswith("the Hub at "):  # absent network: retrying is noise
                raise unreachable(f"{what}: {reason}") from None
    reason = _logged_reason(collect.messages)
    detail = (f"{reason}, and it had not succeeded when the {deadline:g} s deadline ran out" if reason else
              f"the Hub did not finish answering within {deadline:g} s (a hung connection, or a very slow network)")
    raise HubTimeoutError(
        f"{what}: {detail}; try again, raise the limit with timeout= or {HUB_TIMEOUT_ENV}=SECONDS, or set "
        "HF_HUB_OFFLINE=1 to use the local cache"
    ) from None


# ---------------------------------------------------------------------------- locating weights
def _local_weights(path: Path, *, fix: str | None = None, sha256: str | None = None, sha256_source: str = "") -> WeightsFile:
    """A ``save_pretrained`` folder or a single ``.safetensors`` file on disk."""
    fix = fix or "Re-create it with save_pretrained() or `csdn convert`."
    if path.is_dir():
        file = path / WEIGHTS_NAME
        if not file.is_file():
            raise FileNotFoundError(
                f"{path} has no {WEIGHTS_NAME}: expected a folder written by save_pretrained() or `csdn convert`"
            )
        return WeightsFile(file, fix, sha256, sha256_source, config_json=path / CONFIG_NAME)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise ValueError(
            f"{path} looks like a PyTorch checkpoint, not a csdn model: convert the authors' checkpoint "
            f"with `csdn convert {path} out/` (or csdn.hub.convert.from_official), then load out/"
        )
    sidecar = path.with_name(CONFIG_NAME) if path.name == WEIGHTS_NAME else None
    return WeightsFile(path, fix, sha256, sha256_source, config_json=sidecar)


def hub_content_hash(path: Path) -> str | None:
    """The SHA-256 a Hub cache file is stored under (LFS files' blobs are named by it), if any."""
    if path.is_symlink():
        name = path.resolve().name
        return name if SHA256_HEX.fullmatch(name) else None
    return None


def _unavailable_reason(err: Exception, filename: str) -> str:
    if isinstance(err, RepositoryNotFoundError):
        return "the repository does not exist on the Hub (or is private and no valid token was given)"
    if isinstance(err, RevisionNotFoundError):
        return "the repository has no such revision"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"the repository has no file {filename}"
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return "it is not in the local cache and the Hub cannot be reached (offline mode, local_files_only, or no network)"
    return str(err).strip().splitlines()[0]


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """What the HTTP client huggingface_hub uses raises when a transfer fails (connection cut, timeout).

    huggingface_hub has used requests, httpx and httpx2; whichever it imported is in ``sys.modules``.
    """
    found = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def _not_a_hub(err: BaseException) -> str | None:
    """The endpoint answered, but not as a Hub does (an HTML page: a captive portal, a proxy, a wrong HF_ENDPOINT)."""
    for cause in (err, err.__cause__):
        if cause is not None and "X-Repo-Commit" in str(cause):
            return (f"the server at {_hub_endpoint()} answered with something that is not the Hub (a web page? a "
                    "network sign-in or proxy page, or HF_ENDPOINT pointing at a website); sign in to the network "
                    "or fix HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache")
    return None


def _transfer_failure(err: BaseException) -> str | None:
    """What went wrong when ``err`` is a failed transfer or a Hub server error (HTTP 5xx), else None."""
    for cause in (err, err.__cause__):  # a failed HEAD reaches us as LocalEntryNotFoundError from it
        if isinstance(cause, OfflineModeIsEnabled):
            return None
        status = getattr(getattr(cause, "response", None), "status_code", None)
        if isinstance(cause, HfHubHTTPError) and isinstance(status, int) and status >= 500:
            return f"the Hub answered HTTP {status} (a server error)"
        if type(cause).__name__ == "ConnectError" or isinstance(cause, ConnectionRefusedError):
            return _offline_reason(f"{type(cause).__name__}: {str(cause).strip() or 'no details'}")
        if type(cause).__name__ in ("RemoteProtocolError", "ReadError") and "message body" in str(cause):
            return f"the transfer was interrupted mid-file ({str(cause).strip()})"
        if isinstance(cause, (ConnectionError, *_transfer_errors())):
            return f"the connection failed ({type(cause).__name__}: {str(cause).strip() or 'no details'})"
    return None


def hub_download(
    repo_id: str,
    filename: str,
    revision: str | None,
    *,
    cache_dir: str | Path | None,
    local_files_only: bool | None,
    force_download: bool,
    progress: bool,
    unavailable: Callable[[str], str],
    timeout: float | None = None,
) -> Path:
    """``hf_hub_download`` (its cache, offline mode and revisions) within the Hub deadline, with
    failures turned into our error."""
    deadline = hub_timeout(timeout)
    where = f"cannot download {filename} of the Hub repository {repo_id} (revision {revision or 'main'})"

    def call() -> str:
        return hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=bool(local_files_only),
            force_download=force_download,
            library_name="csdn-reid",
            library_version=package_version(),
            tqdm_class=None if progress else silent_tqdm,
            etag_timeout=min(10.0, deadline),
        )

    try:
        return Path(_within(deadline, call, where))
    except (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled, FileMetadataError, *_transfer_errors()) as err:
        not_hub = _not_a_hub(err)
        if not_hub is not None:
            raise WeightsNotAvailableError(f"{where}: {not_hub}") from None
        failure = _transfer_failure(err)
        if failure is not None:
            raise WeightsNotAvailableError(
                f"{where}: {failure}; check the connection, or set HF_HUB_OFFLINE=1 to use the cache"
            ) from err
        raise WeightsNotAvailableError(unavailable(_unavailable_reason(err, filename))) from err
    except OSError as err:  # huggingface_hub's size check after a short or substituted body
        if "Consistency check failed" not in str(err):
            raise
        raise WeightsNotAvailableError(
            f"{where}: the server sent a file of the wrong size ({str(err).splitlines()[0]}): an interrupted "
            "transfer, or a web page in place of the file; try again, check the network (a proxy or "
            "sign-in page?) and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache"
        ) from None


def _convert_instructions(entry: RegistryEntry) -> str:
    checkpoint = entry.official_checkpoint
    if checkpoint is None:
        return "Load a local copy instead: a folder written by save_pretrained() or `csdn convert`."
    return (
        f"To get working weights now, convert the authors' checkpoint: download {checkpoint} for "
        f"{entry.dataset} from the CSDN authors' release (linked from {AUTHORS_RELEASE}), then run\n"
        f"    csdn convert {checkpoint} out/ --dataset {entry.name}\n"
        f"and load the result with csdn.load(\"out/\") (or `--model out/` on the command line)."
    )


def _registry_weights(
    registry: Registry, entry: RegistryEntry, revision: str | None, **download: Any
) -> WeightsFile:
    source = f"the registry entry {entry.name!r}"
    if entry.bundled is not None:
        if revision is not None:
            raise ValueError(f"{entry.name!r} is bundled with csdn-reid and has no revisions; drop revision=")
        folder = registry.bundled_dir(entry)
        if not folder.is_dir():
            raise WeightsNotAvailableError(
                f"the bundled model {entry.name!r} is missing from {folder}; reinstall csdn-reid "
                "(pip install --force-reinstall csdn-reid)"
            )
        fix = "Reinstall csdn-reid (pip install --force-reinstall csdn-reid) to restore it."
        return _local_weights(folder, fix=fix, sha256=entry.sha256, sha256_source=source)
    assert entry.repo_id is not None  # the registry guarantees repo_id or bundled
    revision = revision or entry.revision
    pinned_hash = entry.sha256 if revision == entry.revision else None  # the hash belongs to the pinned revision

    def unavailable(reason: str) -> str:
        return (
            f"the pretrained weights {entry.name!r} ({entry.repo_id}, revision {revision}) are not available: "
            f"{reason}.\n{_convert_instructions(entry)}"
        )

    path = hub_download(entry.repo_id, entry.filename, revision, unavailable=unavailable, **download)
    return _hub_weights(path, entry.repo_id, revision, pinned_hash, source)


def _hub_weights(path: Path, repo_id: str, revision: str | None, sha256: str | None, source: str) -> WeightsFile:
    fix = (
        f"Delete the cached file ({path.resolve()}) and download it again, or pass force_download=True "
        "to csdn.load()."
    )
    if sha256 is None:
        sha256, source = hub_content_hash(path), f"the Hub ({repo_id}@{revision or 'main'})"
    return WeightsFile(path, fix, sha256, source)


def _parse_hub_id(text: str, revision: str | None) -> tuple[str, str | None]:
    """``hf-hub:org/repo`` or ``hf-hub:org/repo@revision`` -> (repo_id, revision)."""
    repo_id, _, pinned = text[len(HUB_PREFIX):].partition("@")
    if not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"{text!r} is not a Hub model id; write 'hf-hub:org/repo' or 'hf-hub:org/repo@revision'")
    if pinned and revision and pinned != revision:
        raise ValueError(f"{text!r} pins revision {pinned!r}, but revision={revision!r} was also given")
    return repo_id, (pinned or revision)


def _locate(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None,
    registry: RegistryLike,
    **download: Any,
) -> WeightsFile:
    """Resolve a Hub id, an existing local path or a registry name (in that order) to a file on disk."""
    text = os.fspath(name_or_path)
    if text.startswith(HUB_PREFIX):
        repo_id, revision = _parse_hub_id(text, revision)

        def unavailable(reason: str) -> str:
            return (
                f"cannot get {WEIGHTS_NAME} of the Hub repository {repo_id} (revision {revision or 'main'}): "
                f"{reason}. Check the repository id and revision; private repositories need a token "
                "(`hf auth login` or HF_TOKEN); offline, load a local copy made with save_pretrained()."
            )

        path = hub_download(repo_id, WEIGHTS_NAME, revision, unavailable=unavailable, **download)
        return _hub_weights(path, repo_id, revision, None, "")
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ValueError(f"revision= applies to Hub models, not to the local path {path}")
        return _local_weights(path)
    opened = open_registry(registry)
    if text in opened.entries:
        return _registry_weights(opened, opened.get(text), revision, **download)
    if "/" in text or os.sep in text or path.suffix:
        hint = f"; for a Hub repository write 'hf-hub:{text}'" if text.count("/") == 1 and not path.suffix else ""
        raise FileNotFoundError(f"no such file or directory: {path}{hint}")
    raise ValueError(
        f"{text!r} is not a registered model ({', '.join(opened.names())}), an existing local folder or "
        ".safetensors file, or a Hub id 'hf-hub:org/repo'"
    )


# ---------------------------------------------------------------------------- public entry points
def load(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    progress: bool = True,
    registry: RegistryLike = None,
    timeout: float | None = None,
) -> CSDN:
    """A verified CSDN model in eval mode.

    ``name_or_path`` is one of:
      - ``"hf-hub:org/repo"`` or ``"hf-hub:org/repo@revision"``: a Hub repository in our format;
      - a local folder written by :func:`save_pretrained`, or a single ``.safetensors`` file;
      - a registry name (see :func:`csdn.list_models`), downloaded from the Hub or bundled;
      - nothing: :data:`csdn.DEFAULT_MODEL` (``"synthetic-tiny"``), the small demo model bundled
        with the package, trained on synthetic images (not for real cameras).

    Downloads go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``,
    ``HF_TOKEN``). ``local_files_only=None`` follows ``HF_HUB_OFFLINE``; ``revision`` picks a
    branch, tag or commit (overriding a registry entry's pinned revision); ``registry`` is a
    registry file or :class:`csdn.hub.registry.Registry` to use instead of the installed one.
    ``timeout`` bounds each Hub download as a whole, retries included (default: the environment
    variable ``CSDN_HUB_TIMEOUT``, else 30 seconds).

    Raises:
        WeightsNotAvailableError: the weights cannot be obtained (for a registered model, the
            message says how to convert the authors' checkpoint instead); its subclass
            HubTimeoutError when the Hub did not answer within ``timeout``.
        WeightsError: the file is corrupted, truncated or does not fit its config.
        DeviceError: ``device`` is not available (e.g. ``"cuda"`` on a CPU-only torch build).
    """
    device = resolve_device(device)  # before any download
    weights = _locate(name_or_path, revision=revision, registry=registry, cache_dir=cache_dir,
                      local_files_only=local_files_only, force_download=force_download, progress=progress,
                      timeout=timeout)
    return load_verified(weights, device)


def load_config(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    local_files_only: bool | None = None,
    cache_dir: str | Path | None = None,
    registry: RegistryLike = None,
    timeout: float | None = None,
) -> CSDNConfig:
    """The config of a model, from the same verified file :func:`load` would use, without building it."""
    weights = _locate(name_or_path, revision=revision, registry=registry, cache_dir=cache_dir,
                      local_files_only=local_files_only, force_download=False, progress=False, timeout=timeout)
    return verified_config(weights)[0]


def push_to_hub(
    model: CSDN,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CSDN model",
    timeout: float | None = None,
    evaluation: Any = None,
    extra_meta: Mapping[str, Any] | None = None,
):
    """Save ``model`` with :func:`save_pretrained` and upload the folder to the Hub repository ``repo_id``.

    ``evaluation`` (``csdn.evaluate(...)`` results) and ``extra_meta`` are recorded as by
    :func:`save_pretrained`, so the card's ``model-index`` shows the metrics on the Hub.
    Returns what :func:`upload_folder` returns; fails as it does.
    """
    if not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="csdn-push-") as folder:
        save_pretrained(model, folder, repo_id=repo_id, evaluation=evaluation, extra_meta=extra_meta)
        return upload_folder(folder, repo_id, private=private, token=token, commit_message=commit_message,
                             timeout=timeout)


def upload_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CSDN model",
    timeout: float | None = None,
):
    """Upload a folder written by :func:`save_pretrained` to the Hub repository ``repo_id``.

    Creates the repository if needed. Returns huggingface_hub's ``CommitInfo`` (a string
    holding the commit URL, with ``.oid`` the commit hash). Each Hub call (creating the
    repository, uploading) must finish within ``timeout`` seconds (default: ``CSDN_HUB_TIMEOUT``,
    else 30); a failure raises :class:`csdn.errors.HubError` (``HubTimeoutError`` past the
    deadline) saying what went wrong.
    """
    if not REPO_ID.fullmatch(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    if not (Path(folder) / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}: upload a folder written by save_pretrained()")
    deadline = hub_timeout(timeout)
    api = HfApi(token=token)
    where = f"cannot upload to the Hub repository {repo_id}"

    def bounded(call: Callable[[], Any]) -> Any:
        try:
            return _within(deadline, call, where, unreachable=HubError)
        except (HfHubHTTPError, OfflineModeIsEnabled, *_transfer_errors()) as err:
            if isinstance(err, OfflineModeIsEnabled):
                reason = "offline mode is on (HF_HUB_OFFLINE); unset it to upload"
            else:
                reason = _transfer_failure(err) or str(err).strip().splitlines()[0]
            raise HubError(f"{where}: {reason}") from None

    bounded(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
    return bounded(lambda: api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                                             repo_type="model"))

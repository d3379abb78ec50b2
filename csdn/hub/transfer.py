"""Talking to the Hugging Face Hub within a deadline: downloads, uploads, and what each failure means.

huggingface_hub's own timeouts apply per request and restart with every retry and every byte, so
a hung server can block a call for minutes; here every call runs under one total deadline
(``timeout=``, ``CSDN_HUB_TIMEOUT``, default 30 s), and every failure (no network, a server
error, a web page in place of the Hub, a transfer cut mid-file) becomes one csdn error saying which.
Nothing here knows about models: :mod:`csdn.hub.api` locates and verifies weights on top of it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

from csdn.errors import HubError, HubTimeoutError, WeightsNotAvailableError
from csdn.hub.registry import REPO_ID, SHA256_HEX
from csdn.io.pretrained import WEIGHTS_NAME, package_version

__all__ = ["DEFAULT_HUB_TIMEOUT", "HUB_TIMEOUT_ENV", "hub_timeout", "hub_download", "hub_content_hash", "upload_folder"]

DEFAULT_HUB_TIMEOUT = 30.0  # seconds for a whole Hub call (all its requests and retries)
HUB_TIMEOUT_ENV = "CSDN_HUB_TIMEOUT"


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
            raise ValueError(
                f"{source} is {text!r}; set it to a number of seconds (e.g. 30), or unset it "
                f"for the default {DEFAULT_HUB_TIMEOUT:g}"
            ) from None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{source} must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


# What huggingface_hub logs (and then retries) on its way to a failure, most telling first.
_OFFLINE_SIGNS = (
    "connection refused",
    "name or service not known",
    "temporary failure in name resolution",
    "network is unreachable",
    "no route to host",
    "nodename nor servname",
    "connecterror",
    "failed to establish a new connection",
    "getaddrinfo failed",
)


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _offline_reason(detail: str) -> str:
    return (
        f"the Hub at {_hub_endpoint()} cannot be reached (no network, or the address is wrong: {detail}); "
        "check the connection (and HF_ENDPOINT if set), or set HF_HUB_OFFLINE=1 to use the local cache"
    )


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
        self.thread = thread
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread.ident:
            return True
        self.messages.append(record.getMessage())
        return False


def _within(
    deadline: float, call: Callable[[], Any], what: str, unreachable: type[Exception] = WeightsNotAvailableError
) -> Any:
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
    detail = (
        f"{reason}, and it had not succeeded when the {deadline:g} s deadline ran out"
        if reason
        else f"the Hub did not finish answering within {deadline:g} s (a hung connection, or a very slow network)"
    )
    raise HubTimeoutError(
        f"{what}: {detail}; try again, raise the limit with timeout= or {HUB_TIMEOUT_ENV}=SECONDS, or set "
        "HF_HUB_OFFLINE=1 to use the local cache"
    ) from None


def hub_content_hash(path: Path) -> str | None:
    """The SHA-256 a Hub cache file is stored under (LFS files' blobs are named by it), if any."""
    if path.is_symlink():
        name = path.resolve().name
        return name if SHA256_HEX.fullmatch(name) else None
    return None


def _unavailable_reason(err: BaseException, filename: str) -> str:
    if isinstance(err, RepositoryNotFoundError):
        return "the repository does not exist on the Hub (or is private and no valid token was given)"
    if isinstance(err, RevisionNotFoundError):
        return "the repository has no such revision"
    if isinstance(err, RemoteEntryNotFoundError):
        return f"the repository has no file {filename}"
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return (
            "it is not in the local cache and the Hub cannot be reached (offline mode, local_files_only, or no network)"
        )
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
            return (
                f"the server at {_hub_endpoint()} answered with something that is not the Hub (a web page? a "
                "network sign-in or proxy page, or HF_ENDPOINT pointing at a website); sign in to the network "
                "or fix HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache"
            )
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
            # past the whole-call deadline, so a hung server ends by that deadline (a timeout), never by
            # the client's own per-request timeout racing it (which surfaced as a transport error)
            etag_timeout=min(10.0, deadline + 1.0),
        )

    failures: tuple[type[BaseException], ...] = (
        HfHubHTTPError,
        EntryNotFoundError,
        OfflineModeIsEnabled,
        FileMetadataError,
        *_transfer_errors(),
    )
    try:
        return Path(_within(deadline, call, where))
    except failures as err:
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

    failures: tuple[type[BaseException], ...] = (HfHubHTTPError, OfflineModeIsEnabled, *_transfer_errors())

    def bounded(call: Callable[[], Any]) -> Any:
        try:
            return _within(deadline, call, where, unreachable=HubError)
        except failures as err:
            if isinstance(err, OfflineModeIsEnabled):
                reason = "offline mode is on (HF_HUB_OFFLINE); unset it to upload"
            else:
                reason = _transfer_failure(err) or str(err).strip().splitlines()[0]
            raise HubError(f"{where}: {reason}") from None

    bounded(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
    return bounded(
        lambda: api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, repo_type="model"
        )
    )

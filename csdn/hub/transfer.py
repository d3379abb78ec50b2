"""Talking to the Hugging Face Hub within a deadline: downloads, uploads, and what each failure means.

huggingface_hub's own timeouts apply per request and restart with every retry and every byte, so
a hung server can block a call for minutes; here every call runs under one total deadline
(``timeout=``, ``CSDN_HUB_TIMEOUT``, default 30 s), and every failure (no network, a server
error, a web page in place of the Hub, a transfer cut mid-file) becomes one csdn error saying which.

What went wrong is read from huggingface_hub's typed exceptions (``RepositoryNotFoundError``,
``HfHubHTTPError.response.status_code``, the HTTP client's ``ConnectError``/``TimeoutException``,
...) and from what the call observed itself (the file's size from the Hub's metadata, the bytes
its progress bar was given), never from the wording of a message or a log line.
Nothing here knows about models: :mod:`csdn.hub.loading` locates and verifies weights on top of it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    FileMetadataError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import REGEX_COMMIT_HASH, repo_folder_name
from huggingface_hub.utils import silent_tqdm, validate_repo_id
from huggingface_hub.utils import tqdm as hub_tqdm

from csdn.errors import HubError, HubTimeoutError, WeightsNotAvailableError
from csdn.hub.registry import REPO_ID, SHA256_HEX
from csdn.io.pretrained import WEIGHTS_NAME, package_version

try:  # the HTTP client huggingface_hub 2.x uses; 1.x used httpx, whose error classes have the same names
    import httpx2 as http_client
except ImportError:  # pragma: no cover - huggingface_hub 1.x
    import httpx as http_client  # type: ignore[no-redef, import-not-found, unused-ignore]

__all__ = [
    "DEFAULT_HUB_TIMEOUT",
    "HUB_TIMEOUT_ENV",
    "hub_timeout",
    "hub_download",
    "hub_content_hash",
    "discard_cached",
    "check_repo_id",
    "upload_folder",
]

DEFAULT_HUB_TIMEOUT = 30.0  # seconds for a whole Hub call (all its requests and retries)
_PROBE_RETRIES = 5  # retries of the first request after a server or network fault, as huggingface_hub's own
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


REPO_ID_RULES = (
    "'org/name', each part of letters, digits, '-', '_' and '.', not starting or ending with '-' or '.', "
    "without '--' or '..', not ending in '.git', at most 96 characters"
)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if the Hub accepts it as a repository id, else a ValueError naming it and the valid form.

    huggingface_hub's own check decides (so our rule is the Hub's); its ``HFValidationError`` never reaches the user.
    """
    if REPO_ID.fullmatch(repo_id):  # an "org/" part, which csdn's repositories always have
        try:
            validate_repo_id(repo_id)
            return repo_id
        except HFValidationError:
            pass
    raise ValueError(f"repo_id must look like {REPO_ID_RULES}; got {repo_id!r}")


# ---------------------------------------------------------------------------- what a call observed
@dataclass
class _Observed:
    """What one Hub call has seen so far: written by its worker thread, read when the deadline runs out."""

    problem: str | None = None  # the last failure of a first attempt (a server error, a dropped connection)
    size: int | None = None  # the file's size, from the Hub's metadata
    etag: str | None = None  # the name its blob gets in the cache
    started: bool = False  # the file's bytes began to come (its progress bar was made)
    received: int = 0  # bytes of the file received in the current attempt
    restarts: int = 0  # times the transfer started over from the first byte
    abandoned: threading.Event = field(default_factory=threading.Event)  # the caller gave up at the deadline

    def moved(self, count: float | None) -> None:
        count = int(count or 0)
        if count < 0:  # huggingface_hub rewinds its progress bar when a retry starts from the first byte
            self.restarts += 1
        self.received = max(0, self.received + count)

    def unfinished(self, deadline: float) -> str:
        """Why the call had not finished when its ``deadline`` ran out."""
        if self.started:
            of = f" of {self.size}" if self.size is not None else ""
            again = f", after starting over {self.restarts} time(s)" if self.restarts else ""
            return (
                f"the transfer of the file began but was interrupted or stalled: {self.received}{of} bytes had "
                f"arrived{again} when the {deadline:g} s deadline ran out (a dropped or very slow connection)"
            )
        if self.problem:
            return f"{self.problem}, and it had not succeeded when the {deadline:g} s deadline ran out"
        return f"the Hub did not finish answering within {deadline:g} s (a hung connection, or a very slow network)"


def _watching(base: type, observed: _Observed) -> type:
    """A progress-bar class (huggingface_hub's ``tqdm_class=``) that tells ``observed`` every byte counted."""

    class Watched(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            observed.started = True
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> Any:
            if observed.abandoned.is_set():  # stop a transfer nobody waits for (huggingface_hub removes its file)
                raise _Abandoned
            observed.moved(n)
            return super().update(n)

    return Watched


class _Quiet(logging.Filter):
    """Keeps huggingface_hub's retry warnings from one thread off the terminal: the final error says what failed."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self.thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread.ident


def _hub_endpoint() -> str:
    return constants.ENDPOINT


def _unreachable(err: BaseException) -> str:
    detail = f"{type(err).__name__}: {str(err).strip() or 'no details'}"
    return (
        f"the Hub at {_hub_endpoint()} cannot be reached (no network, or the address is wrong: {detail}); "
        "check the connection (and HF_ENDPOINT if set), or set HF_HUB_OFFLINE=1 to use the local cache"
    )


class _Abandoned(Exception):
    """Raised in the worker to end a call whose caller gave up at the deadline."""


class _Unreachable(Exception):
    """Raised in the worker when no connection to the Hub can be made at all: said at once, not retried."""

    def __init__(self, err: BaseException) -> None:
        super().__init__(_unreachable(err))


def _within(
    deadline: float,
    call: Callable[[], Any],
    what: str,
    observed: _Observed,
    *,
    unreachable: type[Exception] = WeightsNotAvailableError,
    on_timeout: Callable[[], None] | None = None,
) -> Any:
    """``call()`` in a worker thread, given up after ``deadline`` seconds with :class:`HubTimeoutError`.

    The HTTP client's own timeouts apply per request and restart with every retry and every
    byte received; this bounds the whole call. Past the deadline ``observed.abandoned`` is set, so
    the worker starts nothing new and stops at its next step; until then (a request it is blocked in)
    its retry warnings stay off the terminal. ``on_timeout`` cleans up after it, and what the call
    ``observed`` says why it had not finished.
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
                handler.removeFilter(quiet)

    worker = threading.Thread(target=work, name="csdn-hub-call", daemon=True)
    quiet = _Quiet(worker)
    for handler in handlers:
        handler.addFilter(quiet)
    worker.start()
    try:
        return result.result(timeout=deadline)
    except concurrent.futures.TimeoutError:
        observed.abandoned.set()
    except _Unreachable as err:
        raise unreachable(f"{what}: {err}") from None
    if on_timeout is not None:
        on_timeout()
    raise HubTimeoutError(
        f"{what}: {observed.unfinished(deadline)}; try again, raise the limit with timeout= or "
        f"{HUB_TIMEOUT_ENV}=SECONDS, or set HF_HUB_OFFLINE=1 to use the local cache"
    ) from None


# ---------------------------------------------------------------------------- what a failure means
def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the errors it was raised from (huggingface_hub wraps a failed request in its own)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _status(err: BaseException) -> int | None:
    """The HTTP status of a Hub answer that failed, if ``err`` is one."""
    if isinstance(err, HfHubHTTPError) and err.response is not None:
        return int(err.response.status_code)
    return None


def _transient(err: BaseException) -> str | None:
    """What went wrong if ``err`` is a fault of the network or the Hub's servers (worth retrying), else None."""
    status = _status(err)
    if status is not None and (status >= 500 or status in (408, 429)):
        kind = "a server error" if status >= 500 else "too many requests" if status == 429 else "a request timeout"
        return f"the Hub answered HTTP {status} ({kind})"
    if isinstance(err, http_client.TimeoutException):
        return f"the Hub did not answer in time ({type(err).__name__})"
    if isinstance(err, http_client.TransportError):
        return f"the connection failed ({type(err).__name__}: {str(err).strip() or 'no details'})"
    return None


def _is_connect_error(err: BaseException) -> bool:
    """No connection could be made at all (refused, no route, no such host): the Hub cannot be reached."""
    return isinstance(err, (http_client.ConnectError, ConnectionRefusedError))


def _not_a_hub() -> str:
    return (
        f"the server at {_hub_endpoint()} answered with something that is not the Hub (a web page? a "
        "network sign-in or proxy page, or HF_ENDPOINT pointing at a website); sign in to the network "
        "or fix HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache"
    )


def _unavailable_reason(err: BaseException, filename: str) -> str:
    """Why the file cannot be had, for a failure that is not the network's (a missing repository, offline)."""
    for cause in _chain(err):
        if isinstance(cause, GatedRepoError):
            return (
                "the repository is gated: accept its conditions on the Hub, then log in (`hf auth login` or HF_TOKEN)"
            )
        if isinstance(cause, RepositoryNotFoundError):
            return "the repository does not exist on the Hub (or is private and no valid token was given)"
        if isinstance(cause, RevisionNotFoundError):
            return "the repository has no such revision"
        if isinstance(cause, RemoteEntryNotFoundError):
            return f"the repository has no file {filename}"
        status = _status(cause)
        if status in (401, 403):
            return f"the Hub refused access (HTTP {status}): a private or gated repository needs a valid token"
        if status is not None:
            return f"the Hub answered HTTP {status}"
    return "it is not in the local cache and the Hub cannot be reached (offline mode, local_files_only, or no network)"


def _download_failure(err: BaseException, observed: _Observed) -> str | None:
    """What went wrong if ``err`` is a failed transfer or a misbehaving server, else None (the file is unavailable)."""
    causes = list(_chain(err))
    if any(isinstance(cause, OfflineModeIsEnabled) for cause in causes):
        return None
    if any(isinstance(cause, FileMetadataError) for cause in causes):
        return _not_a_hub()
    if type(err) is OSError and err.errno is None and observed.size is not None and observed.received != observed.size:
        # huggingface_hub's own size check after the body ended: fewer or other bytes than the Hub announced
        return (
            f"the server sent {observed.received} bytes in place of the {observed.size}-byte file: an interrupted "
            "transfer, or a web page in place of the file; try again, check the network (a proxy or sign-in "
            "page?) and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache"
        )
    for cause in causes:
        if _is_connect_error(cause):
            return _unreachable(cause)
        problem = _transient(cause)
        if problem is not None:
            if isinstance(cause, http_client.TransportError) and observed.received:
                problem = f"the transfer was interrupted mid-file ({type(cause).__name__})"
            return f"{problem}; check the connection, or set HF_HUB_OFFLINE=1 to use the cache"
    return None


# ---------------------------------------------------------------------------- the Hub cache
def hub_content_hash(path: Path) -> str | None:
    """The SHA-256 a Hub cache file is stored under (LFS files' blobs are named by it), if any."""
    if path.is_symlink():
        name = path.resolve().name
        return name if SHA256_HEX.fullmatch(name) else None
    return None


def discard_cached(path: Path) -> bool:
    """Remove the Hub cache file ``path`` (a snapshot link) and its blob, so the next call downloads it again.

    Only a file of the Hub cache's layout is removed (a link to a blob named by a SHA-256);
    returns whether one was.
    """
    if hub_content_hash(path) is None:
        return False
    blob = path.resolve()
    blob.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return True


def _blobs_folder(repo_id: str, cache_dir: str | Path | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else Path(constants.HF_HUB_CACHE)
    return root.expanduser() / repo_folder_name(repo_id=repo_id, repo_type="model") / "blobs"


def _partial_files(blobs: Path, etag: str | None) -> set[Path]:
    """The partial downloads of the blob ``etag`` (huggingface_hub names them ``<etag>.<random>.incomplete``)."""
    return set(blobs.glob(f"{etag}.*.incomplete")) if etag else set()


def _open_here() -> set[Path] | None:
    """The files this process holds open, where the system tells (``/proc/self/fd``), else None."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        return None
    held = set()
    for fd in fds.iterdir():
        try:
            held.add(Path(os.readlink(fd)))
        except OSError:  # closed meanwhile
            continue
    return held


# ---------------------------------------------------------------------------- downloads
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
    failures turned into our error.

    Online, the file's metadata is asked for first (retried here after a server or network fault,
    with back-off, until the deadline), so that a Hub that cannot be reached is said at once and
    the last fault is known when the deadline runs out; then ``hf_hub_download`` does the rest
    from the cache or the Hub. A call given up at the deadline starts nothing more, stops its
    transfer at the next chunk, and removes the partial download it left in the cache (only its own).
    """
    deadline = hub_timeout(timeout)
    where = f"cannot download {filename} of the Hub repository {repo_id} (revision {revision or 'main'})"
    offline = bool(local_files_only) or constants.HF_HUB_OFFLINE  # no request to make: the cache decides
    blobs = _blobs_folder(repo_id, cache_dir)
    before: set[Path] = set()
    observed = _Observed()

    def download(*, cached_only: bool = False) -> str:
        bar = hub_tqdm if progress else silent_tqdm
        return hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=bool(local_files_only) or cached_only,  # HF_HUB_OFFLINE is huggingface_hub's to apply
            force_download=force_download and not cached_only,
            library_name="csdn-reid",
            library_version=package_version(),
            tqdm_class=_watching(bar, observed),
            # past the whole-call deadline, so a hung server ends by that deadline (a timeout), never by
            # the client's own per-request timeout racing it (which surfaced as a transport error)
            etag_timeout=min(10.0, deadline + 1.0),
        )

    def call() -> str:
        if offline:
            return download()
        if REGEX_COMMIT_HASH.fullmatch(revision or "") and not force_download:
            with contextlib.suppress(LocalEntryNotFoundError):  # a commit's file never changes: no request needed
                return download(cached_only=True)
        attempt = 0
        while True:
            if observed.abandoned.is_set():
                raise _Abandoned
            try:
                metadata = get_hf_file_metadata(
                    hf_hub_url(repo_id, filename, revision=revision),
                    timeout=min(10.0, deadline + 1.0),
                    library_name="csdn-reid",
                    library_version=package_version(),
                )
            except Exception as err:  # noqa: BLE001 - sorted by type; what is not a fault is hf_hub_download's to say
                problem, refused = _transient(err), _is_connect_error(err)
                if (refused or (problem and attempt == 0)) and not force_download:
                    # huggingface_hub falls back to the cache when the Hub cannot be reached: so do we, at once
                    with contextlib.suppress(LocalEntryNotFoundError):
                        return download(cached_only=True)
                if refused:
                    raise _Unreachable(err) from None
                if problem is None:  # a missing repository, revision or file, a refused token (or a cached copy)
                    return download()
                observed.problem = problem
                if attempt == _PROBE_RETRIES:
                    raise
                time.sleep(min(8.0, 2.0**attempt))  # back off as huggingface_hub does, within the deadline
                attempt += 1
                continue
            observed.size, observed.etag = metadata.size, metadata.etag
            before.update(_partial_files(blobs, metadata.etag))
            if observed.abandoned.is_set():
                raise _Abandoned
            return download()

    def drop_partial() -> None:
        """Remove the partial file the abandoned call is writing: new since it began, and held open by us."""
        mine = _partial_files(blobs, observed.etag) - before
        held = _open_here()
        for partial in mine if held is None else {p for p in mine if p.resolve() in held}:
            partial.unlink(missing_ok=True)

    try:
        return Path(_within(deadline, call, where, observed, on_timeout=drop_partial))
    except WeightsNotAvailableError:  # ours already: the deadline, or an unreachable Hub
        raise
    except Exception as err:
        failure = _download_failure(err, observed)
        if failure is not None:
            raise WeightsNotAvailableError(f"{where}: {failure}") from err
        if any(isinstance(cause, _UNAVAILABLE) for cause in _chain(err)):
            raise WeightsNotAvailableError(unavailable(_unavailable_reason(err, filename))) from err
        raise


# a file that cannot be had: not on the Hub, not cached while offline (a ValueError of huggingface_hub's
# about force_download is raised from one of these)
_UNAVAILABLE = (HfHubHTTPError, EntryNotFoundError, OfflineModeIsEnabled)


# ---------------------------------------------------------------------------- uploads
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
    check_repo_id(repo_id)
    if not (Path(folder) / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}: upload a folder written by save_pretrained()")
    deadline = hub_timeout(timeout)
    api = HfApi(token=token)
    where = f"cannot upload to the Hub repository {repo_id}"

    def bounded(call: Callable[[], Any]) -> Any:
        def attempt() -> Any:
            try:
                return call()
            except Exception as err:
                refused = next((cause for cause in _chain(err) if _is_connect_error(cause)), None)
                if refused is not None:
                    raise _Unreachable(refused) from None
                raise

        try:
            return _within(deadline, attempt, where, _Observed(), unreachable=HubError)
        except HubError:
            raise
        except Exception as err:
            reason = _upload_failure(err)
            if reason is None:
                raise
            raise HubError(f"{where}: {reason}") from err

    bounded(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
    return bounded(
        lambda: api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), commit_message=commit_message, repo_type="model"
        )
    )


def _upload_failure(err: BaseException) -> str | None:
    """What went wrong with an upload, from the error's type and the Hub's answer, or None if not the Hub's doing."""
    for cause in _chain(err):
        if isinstance(cause, OfflineModeIsEnabled):
            return "offline mode is on (HF_HUB_OFFLINE); unset it to upload"
        problem = _transient(cause)
        if problem is not None:
            return problem
        status = _status(cause)
        if status in (401, 403):
            return f"the Hub refused the upload (HTTP {status}): log in with a token that may write to it"
        if status is not None:
            said = getattr(cause, "server_message", None)
            return f"the Hub answered HTTP {status}" + (f" ({said})" if said else "")
    return None

"""A small stand-in for the Hugging Face Hub on 127.0.0.1, so Hub code runs for real without network.

It answers the routes ``huggingface_hub`` uses to download a file and to upload a folder:

- ``HEAD``/``GET /{org}/{name}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length`` as the Hub sends them. Large-file-storage files (``*.safetensors``)
  answer with a redirect to a second origin (the "CDN") carrying ``X-Linked-Etag`` (the
  content's SHA-256) and ``X-Linked-Size``, like the real Hub; other files are served directly.
  Unknown repos, revisions and files get 404 with ``X-Error-Code`` RepoNotFound /
  RevisionNotFound / EntryNotFound.
- ``POST /api/repos/create``, ``/api/validate-yaml``, ``/api/models/{repo}/preupload/{rev}`` and
  ``/api/models/{repo}/commit/{rev}`` (every file committed inline, "regular" upload mode).

Repositories live in memory: each commit is an immutable ``{path: bytes}`` snapshot with a
40-hex id, and branches point at commits. Every request is logged in ``requests``.
``fail(prefix, how)`` makes requests (downloads and uploads) under a path prefix fail as a broken Hub or network
does: an HTTP error status, ``"cut"`` (the connection closed without an answer), ``"cut-body"``
(headers and half the body, then the connection closed), ``"hang"`` (the connection accepted
and never answered; the handler gives up by itself after ``HANG_LIMIT_S`` or when the hub
closes, so the server always stops), or ``"html"`` (200 with a web page, as a captive portal
or a misconfigured proxy answers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors",)
HANG_LIMIT_S = 20.0  # the longest a "hang" handler keeps its connection open
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please sign in.</body></html>"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a "hang" handler never holds up the test process at exit

    def handle_error(self, request, client_address) -> None:  # a client that gave up is not news
        pass


class FakeHub:
    """In-memory Hub repositories served over HTTP on two local ports (Hub and CDN)."""

    def __init__(self) -> None:
        self.branches: dict[str, dict[str, str]] = {}  # repo_id -> {branch: commit}
        self.snapshots: dict[str, dict[str, bytes]] = {}  # commit -> files
        self.commit_repo: dict[str, str] = {}  # commit -> repo_id
        self.requests: list[dict] = []  # {"method", "path", "authorization"}
        self.failures: dict[str, int | str] = {}  # download path prefix -> HTTP status, or "cut"
        self.lock = threading.Lock()
        self.closing = threading.Event()  # ends every "hang" at once
        handler = type("Handler", (_Handler,), {"hub": self})
        self._servers = [_QuietServer(("127.0.0.1", 0), handler) for _ in range(2)]
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def close(self) -> None:
        self.closing.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    # ------------------------------------------------------------------ repository state
    def create_repo(self, repo_id: str) -> bool:
        """Create an empty repository; False if it already exists."""
        with self.lock:
            if repo_id in self.branches:
                return False
            self.branches[repo_id] = {}
        self.commit(repo_id, {})
        return True

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add or replace ``files`` on ``branch`` (creating the repository if needed); return the commit id."""
        with self.lock:
            heads = self.branches.setdefault(repo_id, {})
            parent = heads.get(branch)
            snapshot = {**self.snapshots.get(parent, {}), **files} if parent else dict(files)
            digest = hashlib.sha1(f"{repo_id}\n{parent}\n{len(self.snapshots)}".encode())
            for path in sorted(snapshot):
                digest.update(path.encode() + hashlib.sha256(snapshot[path]).digest())
            commit = digest.hexdigest()
            self.snapshots[commit] = snapshot
            self.commit_repo[commit] = repo_id
            heads[branch] = commit
            return commit

    def fail(self, prefix: str, how: int | str) -> None:
        """Answer HEAD/GET/POST requests whose path starts with ``prefix`` (e.g. ``"/lfs/"``, the CDN) with
        the HTTP status ``how`` (e.g. 503), ``"cut"`` (closing the connection unanswered), ``"cut-body"``
        (half the body, then closing), ``"hang"`` (never answering) or ``"html"`` (a 200 web page)."""
        with self.lock:
            self.failures[prefix] = how

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            return dict(self.snapshots[self.branches[repo_id][revision]])

    def paths_requested(self, method: str | None = None) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests if method is None or r["method"] == method]

    def _resolve(self, repo_id: str, revision: str) -> str | None:
        heads = self.branches.get(repo_id, {})
        if revision in heads:
            return heads[revision]
        return revision if self.commit_repo.get(revision) == repo_id else None

    def _blob(self, sha256: str) -> bytes | None:
        with self.lock:
            snapshots = list(self.snapshots.values())
        for snapshot in snapshots:
            for content in snapshot.values():
                if hashlib.sha256(content).hexdigest() == sha256:
                    return content
        return None


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _record(self) -> list[str]:
        path = urlsplit(self.path).path
        with self.hub.lock:
            self.hub.requests.append(
                {"method": self.command, "path": path, "authorization": self.headers.get("Authorization")}
            )
        return path.split("/")[1:]

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._json(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    # ------------------------------------------------------------------ downloads
    def do_HEAD(self) -> None:
        parts = self._record()
        if not self._injected_failure():
            self._download(parts)

    def do_GET(self) -> None:
        parts = self._record()
        if not self._injected_failure():
            self._download(parts)

    def _injected_failure(self) -> bool:
        """Fail the request as :meth:`FakeHub.fail` asked; False when no failure applies."""
        path = urlsplit(self.path).path
        with self.hub.lock:
            how = next((how for prefix, how in self.hub.failures.items() if path.startswith(prefix)), None)
        if how is None:
            return False
        if how == "cut":
            self.close_connection = True  # no status line, no headers: the client sees the connection drop
        elif how == "hang":
            self.hub.closing.wait(HANG_LIMIT_S)  # accepted, never answered; bounded, and ended by close()
            self.close_connection = True
        elif how == "html":
            self._send(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        elif how == "cut-body":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"\0" * 1000)
                self.wfile.flush()
            self.close_connection = True
        else:
            self._json(int(how), {"error": "injected failure"})
        return True

    def _download(self, parts: list[str]) -> None:
        if len(parts) == 2 and parts[0] == "lfs":  # the CDN
            content = self.hub._blob(parts[1])
            if content is None:
                self._send(404)
            else:
                self._send(200, content, {"ETag": f'"{parts[1]}"', "Content-Type": "application/octet-stream"})
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self._send(404)
            return
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", unquote(parts[3]), unquote("/".join(parts[4:]))
        with self.hub.lock:
            known = repo_id in self.hub.branches
            commit = self.hub._resolve(repo_id, revision) if known else None
            content = self.hub.snapshots[commit].get(filename) if commit else None
        if not known:
            self._error("RepoNotFound", "Repository not found")
            return
        if commit is None:
            self._error("RevisionNotFound", "Invalid rev id: " + revision)
            return
        if content is None:
            self._error("EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
            return
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(content).hexdigest()
            self._send(
                302,
                b"",
                {
                    "Location": f"{self.hub.cdn}/lfs/{sha256}",
                    "X-Repo-Commit": commit,
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(content)),
                    "ETag": f'"{_git_blob_id(content)}"',
                },
            )
            return
        self._send(200, content, {"X-Repo-Commit": commit, "ETag": f'"{_git_blob_id(content)}"'})

    # ------------------------------------------------------------------ uploads
    def do_POST(self) -> None:
        parts = self._record()
        body = self._body()
        if self._injected_failure():
            return
        if parts == ["api", "repos", "create"]:
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            url = f"{self.hub.endpoint}/{repo_id}"
            if self.hub.create_repo(repo_id):
                self._json(200, {"url": url})
            else:
                self._json(409, {"error": "You already created this model repo", "url": url})
        elif parts == ["api", "validate-yaml"]:
            self._json(200, {"errors": [], "warnings": []})
        elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            self._json(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        elif len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] == "commit":
            repo_id, branch = f"{parts[2]}/{parts[3]}", unquote(parts[5])
            files = {}
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] != "header":
                    self._json(400, {"error": f"the fake Hub does not support {item['key']!r} operations"})
                    return
            commit = self.hub.commit(repo_id, files, branch)
            self._json(200, {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{commit}", "commitOid": commit})
        else:
            self._json(501, {"error": f"the fake Hub does not serve POST {self.path}"})

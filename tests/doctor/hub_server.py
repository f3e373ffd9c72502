"""A loopback HTTP server speaking the part of the Hugging Face hub API that
``huggingface_hub`` uses (``HF_ENDPOINT`` points at it): a repository's listing
with file sizes (``/api/models/{repo}[/revision/{rev}]``) and its files
(``/{repo}/resolve/{revision}/{file}``, HEAD and GET, with Range). It records
every request (tests only).

Knobs for the failure cases: ``gated`` (repo -> the token that opens it),
``cut_once`` (files whose first whole GET stops half-way: the connection drops)
and ``claimed_sizes`` (file -> the size the listing claims)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_PATH = re.compile(r"^/(?:api/models/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+?)(?:/revision/(?P<rev>[^/]+))?$")


class HubServer:
    def __init__(self, repos: dict[str, dict[str, bytes]], *, gated: dict[str, str] | None = None,
                 cut_once: set[str] | None = None,
                 claimed_sizes: dict[str, int] | None = None) -> None:
        self.repos = repos
        self.gated = gated or {}
        self.cut_once = set(cut_once or ())
        self.claimed_sizes = claimed_sizes or {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                path = self.path.split("?")[0]
                listing = _INFO.match(path)
                if listing and "/resolve/" not in path:
                    return self._listing(listing["repo"])
                match = _PATH.match(path)
                repo = hub.repos.get(match["repo"]) if match else None
                if repo is None or match is None:
                    return self._error("RepoNotFound")
                token = hub.gated.get(match["repo"])
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    return self._error("GatedRepo")
                data = repo.get(match["file"])
                if data is None:
                    return self._error("EntryNotFound")
                status, chunk = 200, data
                wanted = re.match(r"bytes=(\d+)-(\d+)?", self.headers.get("Range") or "")
                if wanted:
                    start = int(wanted[1])
                    end = min(int(wanted[2]) if wanted[2] else len(data) - 1, len(data) - 1)
                    status, chunk = 206, data[start:end + 1]
                self.send_response(status)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(chunk)))
                if status == 206:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{start + len(chunk) - 1}/{len(data)}")
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                if status == 200 and match["file"] in hub.cut_once:
                    hub.cut_once.discard(match["file"])
                    self.wfile.write(chunk[:len(chunk) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

            def _listing(self, name: str) -> None:
                repo = hub.repos.get(name)
                if repo is None:
                    return self._error("RepoNotFound")
                siblings = [{"rfilename": f, "size": hub.claimed_sizes.get(f, len(data)),
                             "blobId": hashlib.sha1(data).hexdigest()}
                            for f, data in sorted(repo.items())]
                payload = json.dumps({"id": name, "modelId": name, "sha": COMMIT,
                                      "private": False, "gated": name in hub.gated and "auto",
                                      "siblings": siblings}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(payload)

            def _error(self, code: str) -> None:
                # The hub answers 401 for a repo it does not show (missing or private),
                # and for a gated one without a token that may open it.
                self.send_response(404 if code == "EntryNotFound" else 401)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

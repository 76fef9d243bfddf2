"""A fake Hugging Face Hub on 127.0.0.1, enough for `push_to_hub`, `upload_folder` and downloads by repository id.

It answers repository creation, model-card validation, pre-upload, NDJSON commits (files stored under
`store/<repo_id>/`), tree listings and `resolve` downloads with the status codes and `X-Error-Code` headers that
`huggingface_hub` expects. A process talks to it with `HF_ENDPOINT=<url>`, `HF_HUB_DISABLE_XET=1`, any token, and no
offline flag.
"""

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub:
    """The Hub endpoints a push and a download need, on 127.0.0.1. Files of a commit are stored under `store/<repo_id>/`.

    The serving loop handles one request at a time through `handle_request` and ends on `stop()`, after
    `max_requests` requests or after `lifetime_s` seconds, whichever comes first.
    """

    def __init__(self, store: Path, max_requests: int = 300, lifetime_s: float = 300.0):
        self.store = store
        self.requests: list[tuple[str, str]] = []
        self.commits = 0
        self.max_requests = max_requests
        self.deadline = time.monotonic() + lifetime_s
        self._stop = threading.Event()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                hub.answer(self, "GET")

            def do_HEAD(self):
                hub.answer(self, "HEAD")

            def do_POST(self):
                hub.answer(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while (
                not self._stop.is_set()
                and time.monotonic() < self.deadline
                and len(self.requests) < self.max_requests
            ):
                self.server.handle_request()
        finally:
            self.server.server_close()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5)

    @property
    def commit_oid(self) -> str:
        return hashlib.sha1(str(self.commits).encode()).hexdigest()

    # -- protocol --------------------------------------------------------------------------------------------

    @staticmethod
    def _body(request: BaseHTTPRequestHandler) -> bytes:
        if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(request.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    request.rfile.readline()
                    return b"".join(chunks)
                chunks.append(request.rfile.read(size))
                request.rfile.readline()
        return request.rfile.read(int(request.headers.get("Content-Length") or 0))

    def _send(self, request, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if not head:
            request.wfile.write(body)

    def _json(self, request, payload, status: int = 200):
        self._send(request, status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def answer(self, request: BaseHTTPRequestHandler, method: str):
        path = unquote(urlsplit(request.path).path)
        self.requests.append((method, path))
        body = self._body(request) if method == "POST" else b""
        if method == "POST" and path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = payload["name"]
            if payload.get("organization") and "/" not in repo_id:
                repo_id = f"{payload['organization']}/{repo_id}"
            (self.store / repo_id).mkdir(parents=True, exist_ok=True)
            return self._json(request, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(request, {"warnings": [], "errors": []})
        if method == "GET" and path.startswith("/api/whoami"):
            return self._json(
                request,
                {
                    "type": "user",
                    "name": "tester",
                    "orgs": [],
                    "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
                },
            )
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if method == "POST" and match:
            repo_id, action = match.group(1), match.group(2)
            if action == "preupload":
                files = json.loads(body).get("files", [])
                return self._json(
                    request,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in files
                        ]
                    },
                )
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                if item.get("key") == "file":
                    target = self.store / repo_id / item["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
            self.commits += 1
            return self._json(
                request,
                {
                    "success": True,
                    "commitOid": self.commit_oid,
                    "commitUrl": f"{self.url}/{repo_id}/commit/{self.commit_oid}",
                    "pullRequestUrl": None,
                },
            )
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if method == "GET" and match:
            # Listing a folder (tokenizers look for `additional_chat_templates/`): what the Hub answers, entries or
            # EntryNotFound for a missing folder.
            folder = self.store / match.group(1) / (match.group(3) or "")
            if not folder.is_dir():
                headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
                return self._send(request, 404, b"Entry not found", headers)
            entries = [
                {
                    "type": "directory" if entry.is_dir() else "file",
                    "path": str(entry.relative_to(self.store / match.group(1))),
                    "oid": hashlib.sha1(entry.name.encode()).hexdigest(),
                    "size": entry.stat().st_size if entry.is_file() else 0,
                }
                for entry in sorted(folder.iterdir())
            ]
            return self._json(request, entries)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if method in ("GET", "HEAD") and match:
            target = self.store / match.group(1) / match.group(3)
            if target.is_file():
                content = target.read_bytes()
                headers = {
                    "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                    "X-Repo-Commit": self.commit_oid,
                    "Content-Type": "application/octet-stream",
                }
                return self._send(request, 200, content, headers, head=method == "HEAD")
            headers = {
                "X-Error-Code": "EntryNotFound",
                "X-Error-Message": "Entry not found",
                "X-Repo-Commit": self.commit_oid,
            }
            return self._send(request, 404, b"Entry not found", headers, head=method == "HEAD")
        headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
        return self._send(request, 404, b"Not found", headers, head=method == "HEAD")

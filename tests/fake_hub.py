"""A stand-in for the Hugging Face Hub's upload API, enough for ``huggingface_hub`` to create a
repository and commit files to it: ``whoami-v2`` (the token check), ``validate-yaml`` (the
README's metadata, parsed with ``huggingface_hub.ModelCard``), ``repos/create``, the
``preupload`` call (every file answered ``regular``, so contents come inline in the commit,
base64) and the ``commit`` call (NDJSON). Files land in memory per repository; the test reads
them back. Runs on a thread (stdlib ``http.server``) on 127.0.0.1.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class HubState:
    token: str
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # repo id -> {"private"}
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> path -> bytes
    requests: list[str] = field(default_factory=list)  # "METHOD path", in order
    validated: int = 0  # README metadata checks passed


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.headers.get("content-encoding") == "gzip":
                raw = gzip.decompress(raw)
            return raw

        def _authorized(self) -> bool:
            if self.headers.get("authorization") == f"Bearer {state.token}":
                return True
            self._send(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            if self.path.startswith("/api/whoami-v2"):
                if self._authorized():
                    self._send(200, {"type": "user", "name": "tester", "auth": {}})
                return
            self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            state.requests.append(f"POST {path}")
            if not self._authorized():
                return
            body = self._body()
            if path == "/api/validate-yaml":
                # The Hub checks a README's metadata before a commit; here huggingface_hub's own
                # card classes do (model-index included).
                from huggingface_hub import ModelCard

                try:
                    ModelCard(json.loads(body)["content"])
                except Exception as exc:
                    self._send(400, {"errors": [{"message": str(exc)}]})
                    return
                state.validated += 1
                self._send(200, {"warnings": []})
                return
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
                state.repos[repo_id] = {"visibility": payload.get("visibility"), **payload}
                state.files.setdefault(repo_id, {})
                base = f"http://{self.headers['host']}"
                self._send(200, {"url": f"{base}/{repo_id}", "name": repo_id})
                return
            parts = path.split("/")  # /api/models/<ns>/<name>/<action>/<revision>
            if len(parts) >= 7 and parts[1] == "api" and parts[2] == "models":
                repo_id, action = f"{parts[3]}/{parts[4]}", parts[5]
                if repo_id not in state.repos:
                    self._send(404, {"error": f"repository {repo_id} not found"})
                elif action == "preupload":
                    files = json.loads(body)["files"]
                    answer = [
                        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                        for f in files
                    ]
                    self._send(200, {"files": answer})
                elif action == "commit":
                    for line in body.splitlines():
                        item = json.loads(line) if line.strip() else {}
                        if item.get("key") == "file":
                            value = item["value"]
                            content = base64.b64decode(value["content"])
                            state.files[repo_id][value["path"]] = content
                    self._send(
                        200,
                        {
                            "commitUrl": f"http://{self.headers['host']}/{repo_id}/commit/abc123",
                            "commitOid": "abc123" + "0" * 34,
                            "success": True,
                        },
                    )
                else:
                    self._send(404, {"error": f"no {action}"})
                return
            self._send(404, {"error": "not found"})

    return Handler


@contextmanager
def fake_hub(token: str) -> Iterator[tuple[str, HubState]]:
    """``(endpoint URL, state)`` of a fake Hub accepting ``token``, for the ``with`` block."""
    state = HubState(token=token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()

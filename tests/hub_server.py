"""A small in-memory Hugging Face Hub, enough for the real `huggingface_hub` client to push and download.

    with FakeHub(token="hf_test") as hub:          # a threaded HTTP server on a free port of 127.0.0.1
        os.environ["HF_ENDPOINT"] = hub.url
        ...                                         # create_repo / create_commit / snapshot_download against it
        hub.files("model", "me/x")                  # {path: bytes} at the head of main

What it speaks (the subset of the Hub API that `huggingface_hub` 2.4 calls to create, push and download):

    POST /api/repos/create                                   {"name", "organization", "type", "visibility"}
    POST /api/{type}s/{ns}/{name}/branch/{branch}            a branch from main's head (409 if it exists)
    POST /api/{type}s/{ns}/{name}/preupload/{rev}            every file "regular": no LFS, no Xet
    POST /api/{type}s/{ns}/{name}/commit/{rev}               NDJSON: header, then "file" entries (base64)
    POST /api/validate-yaml                                  always valid
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]           repo info: id, sha, private, siblings
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]        files (and folders unless recursive)
    GET  /api/{type}s/{ns}/{name}/refs                       branches
    HEAD/GET /{ns}/{name}/resolve/{rev}/{path}               with X-Repo-Commit, ETag, Content-Length
    HEAD/GET /datasets/{ns}/{name}/resolve/{rev}/{path}

Every request must carry `Authorization: Bearer <token>` (401 otherwise). Errors carry the Hub's
`X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so the client raises its usual exceptions.
`refuse_commits = True` answers 403 to every commit. `requests` logs (method, path) and `created` the
create-repo payloads, for tests to assert on. Each commit gets a sha; a branch points at its last commit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO_TYPES = ("model", "dataset", "space")


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> the whole tree at that commit
    branches: dict[str, str] = field(default_factory=dict)              # branch -> sha

    def commit(self, branch: str, changes: dict[str, bytes], message: str) -> str:
        parent = self.branches.get(branch, "")
        tree = {**self.commits.get(parent, {}), **changes}
        sha = hashlib.sha1(json.dumps([parent, message, sorted((p, git_blob_sha(c)) for p, c in tree.items())])
                           .encode()).hexdigest()
        self.commits[sha] = tree
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        return self.branches.get(revision) or (revision if revision in self.commits else None)


class FakeHub:
    """The server and its state; a context manager that starts and stops it."""

    def __init__(self, token: str, user: str = "me"):
        self.token, self.user = token, user
        self.repos: dict[tuple[str, str], Repo] = {}
        self.refuse_commits = False
        self.requests: list[tuple[str, str]] = []
        self.created: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get((repo_type, repo_id))

    def files(self, repo_type: str, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        return dict(repo.commits[repo.resolve(revision)])


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str = "", **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub = hub
    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        body = self._read_body()
        with self.hub.lock:
            self.hub.requests.append((method, url.path))
        try:
            if self.headers.get("Authorization") != f"Bearer {self.hub.token}":
                raise HubError(401, "Invalid credentials in Authorization header")
            with self.hub.lock:
                status, payload, headers = self._route(method, parts, parse_qs(url.query), body)
        except HubError as error:
            status, payload, headers = error.status, {"error": error.message, **error.extra}, (
                {"X-Error-Code": error.code} if error.code else {})
        self._respond(method, status, payload, headers)

    def _route(self, method: str, parts: list[str], query: dict, body: bytes):
        if parts[:1] == ["api"]:
            return self._api(method, parts[1:], query, body)
        repo_type = "dataset" if parts[:1] == ["datasets"] else "model"
        parts = parts[1:] if repo_type == "dataset" else parts
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, "/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        raise HubError(404, f"no route for {method} /{'/'.join(parts)}")

    def _api(self, method: str, parts: list[str], query: dict, body: bytes):
        if method == "POST" and parts == ["repos", "create"]:
            return self._create(json.loads(body))
        if method == "POST" and parts == ["validate-yaml"]:
            return 200, {"errors": [], "warnings": []}, {}
        if len(parts) < 3 or not parts[0].endswith("s") or parts[0][:-1] not in REPO_TYPES:
            raise HubError(404, f"no route for /api/{'/'.join(parts)}")
        repo = self._repo(parts[0][:-1], "/".join(parts[1:3]))
        action, rest = (parts[3] if len(parts) > 3 else "revision"), parts[4:]
        if method == "POST" and action == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                   for f in files]}, {}
        if method == "POST" and action == "commit":
            return self._commit(repo, rest[0], body)
        if method == "POST" and action == "branch":
            return self._branch(repo, rest[0])
        if method == "GET" and action == "revision":
            return self._info(repo, rest[0] if rest else "main")
        if method == "GET" and action == "tree":
            return self._tree(repo, rest[0], "/".join(rest[1:]), query.get("recursive", [""])[0].lower() == "true")
        if method == "GET" and action == "refs":
            return 200, {"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                                      for b, sha in repo.branches.items()], "tags": [], "converts": []}, {}
        raise HubError(404, f"no route for {method} /api/{'/'.join(parts)}")

    def _create(self, payload: dict):
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        self.hub.created.append(payload)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.hub.repos:
            raise HubError(409, f"You already created this {repo_type} repo", url=url)  # the client reads url
        repo = Repo(repo_type, repo_id, private=payload.get("visibility") == "private")
        repo.commit("main", {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                    "initial commit")
        self.hub.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id}, {}

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.hub.repo(repo_type, repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _revision(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _commit(self, repo: Repo, revision: str, body: bytes):
        if self.hub.refuse_commits:
            raise HubError(403, "You don't have the rights to create a commit in this repo")
        self._revision(repo, revision)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        changes = {}
        for line in lines:
            if line["key"] == "file":
                changes[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
            elif line["key"] != "header":
                raise HubError(400, f"unsupported commit operation {line['key']!r} (this fake Hub stores files only)")
        sha = repo.commit(revision, changes, header["summary"])
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return 200, {"commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{sha}", "commitOid": sha,
                     "success": True}, {}

    def _branch(self, repo: Repo, branch: str):
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        repo.branches[branch] = repo.branches["main"]
        return 200, {}, {}

    def _info(self, repo: Repo, revision: str):
        sha = self._revision(repo, revision)
        return 200, {"id": repo.repo_id, "sha": sha, "private": repo.private,
                     "siblings": [{"rfilename": path} for path in sorted(repo.commits[sha])]}, {}

    def _tree(self, repo: Repo, revision: str, folder: str, recursive: bool):
        tree = repo.commits[self._revision(repo, revision)]
        prefix = f"{folder}/" if folder else ""
        entries, folders = [], set()
        for path in sorted(p for p in tree if p.startswith(prefix)):
            rest = path[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "path": path, "size": len(tree[path]), "oid": git_blob_sha(tree[path])})
        entries += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in sorted(folders)]
        return 200, entries, {}

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str):
        repo = self._repo(repo_type, repo_id)
        sha = self._revision(repo, revision)
        if path not in repo.commits[sha]:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        content = repo.commits[sha][path]
        return 200, content, {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"'}

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _respond(self, method: str, status: int, payload, headers: dict) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

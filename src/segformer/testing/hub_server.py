"""A local Hugging Face Hub for tests: the HTTP endpoints that `huggingface_hub` and `transformers` use to
create repositories, upload (regular and LFS files) and download, over a real socket on 127.0.0.1.

Repositories live in memory as commits of file trees, so tests can look at what arrived. The server is
strict where the Hub is: malformed requests get 400, uploaded content must match its sha256, commits may
only reference verified LFS objects, and errors carry the `X-Error-Code` headers the client maps to its
exceptions. Xet storage is not implemented: clients must run with `HF_HUB_DISABLE_XET=1`.

Usage (set `HF_ENDPOINT` to `server.url` before `huggingface_hub` is imported; see tests/conftest_hub.py)::

    server = HubServer(tokens={"hf_test": "user"}).start()
    ...
    server.stop()
"""

import base64
import binascii
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
PR_REF = re.compile(r"^refs/pr/(\d+)$")
# Files bigger than this must go through LFS, as on the Hub.
MAX_REGULAR_FILE_SIZE = 10 * 1024 * 1024
# What a new repository's first commit holds (an excerpt of the Hub's default .gitattributes).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.ckpt", "*.h5", "*.msgpack", "*.npz", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.zip")
)
LFS_CONTENT_TYPE = "application/vnd.git-lfs+json"
KNOWN_PIPELINE_TAGS = {
    "image-classification",
    "image-feature-extraction",
    "image-segmentation",
    "depth-estimation",
    "object-detection",
    "mask-generation",
    "zero-shot-image-classification",
}
CARD_LIST_FIELDS = ("tags", "datasets", "metrics", "language")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubError(Exception):
    """An HTTP error answer: status, message and the `X-Error-Code` the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


def bad_request(message: str) -> HubError:
    return HubError(HTTPStatus.BAD_REQUEST, message)


@dataclass(frozen=True)
class File:
    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, len(self.data))

    @property
    def blob_id(self) -> str:
        """The git object id: of the content, or of the LFS pointer that git stores instead."""
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    @property
    def oid(self) -> str:
        """What `preupload` reports and the client compares with its local file: sha256 for LFS, else git sha1."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass(frozen=True)
class Commit:
    oid: str
    parent: str | None
    files: dict
    title: str
    description: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str = field(default_factory=now)
    refs: dict = field(default_factory=dict)  # "main", other branches and "refs/pr/N" -> commit oid
    commits: dict = field(default_factory=dict)  # oid -> Commit
    lfs_objects: dict = field(default_factory=dict)  # sha256 -> content, once uploaded and verified

    def resolve(self, revision: str) -> Commit:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        if COMMIT_SHA.match(revision) and revision in self.commits:
            return self.commits[revision]
        raise HubError(HTTPStatus.NOT_FOUND, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubStore:
    """The repositories and the LFS upload tickets; requests are served under one lock."""

    def __init__(self):
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.uploads: dict[str, tuple] = {}  # ticket -> (repo, sha256, size, uploaded content or None)
        self.counter = itertools.count()

    def commit(self, repo: Repo, branch: str, files: dict, title: str, description: str = "") -> Commit:
        parent = repo.refs.get(branch)
        payload = json.dumps([parent, sorted((p, f.blob_id) for p, f in files.items()), title, next(self.counter)])
        commit = Commit(hashlib.sha1(payload.encode()).hexdigest(), parent, files, title, description, now())
        repo.commits[commit.oid] = commit
        repo.refs[branch] = commit.oid
        return commit


def parse_card_metadata(content: str) -> dict:
    """The YAML front matter of a README.md (empty when there is none)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.DOTALL)
    if not match:
        return {}
    metadata = yaml.safe_load(match.group(1)) or {}
    if not isinstance(metadata, dict):
        raise ValueError("the metadata block must be a YAML mapping")
    return metadata


def card_metadata_errors(metadata: dict) -> list:
    """What the Hub would reject in a model card's metadata."""
    errors = []
    for name in CARD_LIST_FIELDS:
        value = metadata.get(name)
        if value is not None and not (isinstance(value, str) or all(isinstance(v, str) for v in value)):
            errors.append(f'"{name}" must be a string or a list of strings')
    if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in KNOWN_PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be a known task, got {metadata["pipeline_tag"]!r}')
    if metadata.get("license") == "other" and not metadata.get("license_name"):
        errors.append('"license_name" is required when "license" is "other"')
    base_models = metadata.get("base_model") or []
    for base_model in [base_models] if isinstance(base_models, str) else base_models:
        if not re.match(r"^[\w.-]+(/[\w.-]+)?$", str(base_model)):
            errors.append(f'"base_model" must be model ids, got {base_model!r}')
    for entry in metadata.get("model-index") or []:
        errors += model_index_errors(entry)
    return errors


def model_index_errors(entry) -> list:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return ['"model-index" entries need a "name"']
    errors = []
    for result in entry.get("results") or []:
        task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
        if not (isinstance(task, dict) and isinstance(task.get("type"), str)):
            errors.append('"model-index" results need a "task" with a "type"')
        if not (isinstance(dataset, dict) and isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
            errors.append('"model-index" results need a "dataset" with a "type" and a "name"')
        if not (isinstance(metrics, list) and metrics and all("type" in m and "value" in m for m in metrics)):
            errors.append('"model-index" results need "metrics", each with a "type" and a "value"')
    return errors


def valid_path(path) -> bool:
    parts = path.split("/") if isinstance(path, str) else []
    return bool(parts) and all(part not in ("", ".", "..") for part in parts) and ".git" not in parts


def upload_mode(path: str, size: int, sample: bytes, gitattributes: bytes | None) -> str:
    """The Hub stores a file in LFS when .gitattributes says so, when it is big, or when it is binary."""
    for line in (gitattributes or b"").decode().splitlines():
        pattern, *attributes = line.split()
        if "filter=lfs" in attributes and (fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern)):
            return "lfs"
    return "lfs" if size > MAX_REGULAR_FILE_SIZE or b"\0" in sample else "regular"


# (method, path pattern, handler name); patterns match the raw (still percent-encoded) path.
REPO = r"(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/models/{REPO}/branch/(?P<branch>.+)", "create_branch"),
    ("POST", rf"/api/models/{REPO}/preupload/(?P<revision>[^/]+)", "preupload"),
    ("POST", rf"/api/models/{REPO}/commit/(?P<revision>[^/]+)", "commit"),
    ("GET", rf"/api/models/{REPO}(?:/revision/(?P<revision>[^/]+))?", "model_info"),
    ("GET", rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("GET", rf"/api/models/{REPO}/xet-(?P<kind>read|write)-token(?:/(?P<revision>[^/]+))?", "xet_token"),
    ("PUT", r"/lfs/upload/(?P<ticket>\w+)", "lfs_upload"),
    ("POST", r"/lfs/verify/(?P<ticket>\w+)", "lfs_verify"),
    ("GET", rf"/lfs/objects/{REPO}/(?P<sha256>[0-9a-f]{{64}})", "lfs_download"),
    ("HEAD", rf"/lfs/objects/{REPO}/(?P<sha256>[0-9a-f]{{64}})", "lfs_download"),
    ("GET", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", "resolve"),
]
ROUTES = [(method, re.compile(pattern + "$"), name) for method, pattern, name in ROUTES]


@dataclass
class Failure:
    """An injected failure: the next `times` requests matching method and path pattern get `status`."""

    method: str
    pattern: re.Pattern
    status: int
    times: int


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SegFormerTestHub/1.0"

    # --- plumbing -------------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format, *args):
        pass  # the server keeps its own request log

    @property
    def hub(self) -> "HubServer":
        return self.server.hub

    def dispatch(self):
        url = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        try:
            self.body = self.read_body()
            self.hub.check_injected_failure(self.command, url.path)
            for method, pattern, name in ROUTES:
                match = pattern.match(url.path)
                if match and method == self.command:
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    with self.hub.store.lock:
                        status, headers, body = getattr(self, name)(**params)
                    break
            else:
                raise HubError(HTTPStatus.NOT_FOUND, f"This test server has no route for {self.command} {url.path}")
        except Exception as error:
            if not isinstance(error, HubError):  # a bug of this server: a 500 that names the cause
                error = HubError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(error).__name__}: {error}")
            status, body = error.status, json.dumps({"error": error.message, **error.extra}).encode()
            header_message = error.message.encode("ascii", "replace").decode().replace("\n", " ")
            headers = {"Content-Type": "application/json", "X-Error-Message": header_message}
            if error.code:
                headers["X-Error-Code"] = error.code
        self.hub.log.append((self.command, self.path, int(status)))
        self.respond(status, headers, body)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF that ends a chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def respond(self, status: int, headers: dict, body: bytes):
        self.send_response(status)
        headers = {"Content-Length": str(len(body)), **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json_answer(self, value, status: int = HTTPStatus.OK, content_type: str = "application/json"):
        return status, {"Content-Type": content_type}, json.dumps(value).encode()

    def json_body(self, content_type: str = "application/json"):
        if not self.headers.get("Content-Type", "").startswith(content_type):
            raise bad_request(f"Content-Type must be {content_type}, got {self.headers.get('Content-Type')!r}")
        try:
            value = json.loads(self.body)
        except ValueError as error:
            raise bad_request(f"The body is not valid JSON: {error}") from None
        if not isinstance(value, dict):
            raise bad_request("The body must be a JSON object")
        return value

    # --- authentication -------------------------------------------------------------------------

    def user(self) -> str | None:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or token not in self.hub.tokens:
            raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def readable_repo(self, repo_id: str) -> Repo:
        repo = self.hub.store.repos.get(repo_id)
        if repo is None or (repo.private and self.user() != repo_id.split("/")[0]):
            # The Hub does not reveal whether a private repository exists.
            raise HubError(HTTPStatus.UNAUTHORIZED, f"Repository Not Found for url: {self.path}.", "RepoNotFound")
        return repo

    def writable_repo(self, repo_id: str) -> Repo:
        user = self.user()
        if user is None:
            raise HubError(HTTPStatus.UNAUTHORIZED, "You must be authenticated to write to a repository")
        repo = self.readable_repo(repo_id)
        if repo_id.split("/")[0] != user:
            raise HubError(HTTPStatus.FORBIDDEN, f"You don't have the rights to write to {repo_id}")
        return repo

    # --- account and repositories ---------------------------------------------------------------

    def whoami(self):
        user = self.user()
        if user is None:
            raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
        token = {"displayName": "test", "role": "write"}
        return self.json_answer({"type": "user", "name": user, "fullname": user, "orgs": [], "auth": {"accessToken": token}})

    def create_repo(self):
        user = self.user()
        if user is None:
            raise HubError(HTTPStatus.UNAUTHORIZED, "You must be authenticated to create a repository")
        request = self.json_body()
        name, namespace = request.get("name"), request.get("organization") or user
        if not isinstance(name, str) or not REPO_NAME.match(name):
            raise bad_request(f"Invalid repository name {name!r}")
        if request.get("type", "model") not in (None, "model"):
            raise bad_request(f"This test server only hosts model repositories, not {request['type']!r}")
        if namespace != user:
            raise HubError(HTTPStatus.FORBIDDEN, f"You don't have the rights to create a repository under {namespace!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.store.repos:
            raise HubError(HTTPStatus.CONFLICT, "You already created this model repo", extra={"url": url})
        private = request.get("visibility", "private" if request.get("private") else "public") != "public"
        repo = self.hub.store.repos[repo_id] = Repo(repo_id, private)
        gitattributes = File(DEFAULT_GITATTRIBUTES.encode(), lfs=False)
        self.hub.store.commit(repo, "main", {".gitattributes": gitattributes}, "initial commit")
        return self.json_answer({"url": url, "name": repo_id, "id": repo_id})

    def create_branch(self, repo, branch):
        repo = self.writable_repo(repo)
        if not valid_path(branch) or branch.startswith("refs/"):
            raise bad_request(f"Invalid branch name {branch!r}")
        if branch in repo.refs:
            raise HubError(HTTPStatus.CONFLICT, f"Reference already exists: refs/heads/{branch}")
        start = self.json_body().get("startingPoint") or "main"
        repo.refs[branch] = repo.resolve(start).oid
        return self.json_answer({})

    def validate_yaml(self):
        request = self.json_body()
        if not isinstance(request.get("content"), str) or request.get("repoType", "model") != "model":
            raise bad_request('validate-yaml expects {"content": str, "repoType": "model"}')
        try:
            errors = card_metadata_errors(parse_card_metadata(request["content"]))
        except (ValueError, yaml.YAMLError) as error:
            errors = [f"Invalid YAML metadata: {error}"]
        if errors:
            body = json.dumps({"errors": [{"message": message} for message in errors]}).encode()
            return HTTPStatus.BAD_REQUEST, {"Content-Type": "application/json"}, body
        return self.json_answer({"errors": [], "warnings": []})

    # --- uploads --------------------------------------------------------------------------------

    def preupload(self, repo, revision):
        repo = self.writable_repo(repo)
        base = repo.resolve(revision)  # a PR starts from `revision` too
        files = self.json_body().get("files")
        if not isinstance(files, list) or not files:
            raise bad_request('preupload expects {"files": [{"path", "sample", "size"}, ...]}')
        gitattributes = base.files.get(".gitattributes")
        answers = []
        for entry in files:
            path, size = entry.get("path"), entry.get("size")
            if not valid_path(path) or isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise bad_request(f"Invalid preupload entry {entry!r}: needs a relative path and a size")
            try:
                sample = base64.b64decode(entry.get("sample", ""), validate=True)
            except (binascii.Error, TypeError):
                raise bad_request(f"The sample of {path} is not base64") from None
            if len(sample) > 512:
                raise bad_request(f"The sample of {path} is longer than 512 bytes")
            mode = upload_mode(path, size, sample, gitattributes and gitattributes.data)
            existing = base.files.get(path)
            oid = existing.oid if existing is not None and existing.lfs == (mode == "lfs") else None
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return self.json_answer({"files": answers, "commitOid": base.oid})

    def lfs_batch(self, repo):
        repo = self.writable_repo(repo)
        if self.headers.get("Accept") != LFS_CONTENT_TYPE:
            raise bad_request(f"The LFS batch API needs Accept: {LFS_CONTENT_TYPE}")
        request = self.json_body(LFS_CONTENT_TYPE)
        if request.get("operation") != "upload" or request.get("hash_algo", "sha256") != "sha256":
            raise bad_request("This server supports LFS uploads with sha256 only")
        if "basic" not in request.get("transfers", ["basic"]):
            raise bad_request("This server supports the 'basic' LFS transfer only (set HF_HUB_DISABLE_XET=1)")
        objects = []
        for entry in request.get("objects") or []:
            oid, size = entry.get("oid"), entry.get("size")
            if not isinstance(oid, str) or not SHA256.match(oid) or not isinstance(size, int) or size < 0:
                raise bad_request(f"Invalid LFS object {entry!r}")
            answer = {"oid": oid, "size": size}
            if oid not in repo.lfs_objects:
                ticket = secrets.token_hex(16)
                self.hub.store.uploads[ticket] = (repo, oid, size, None)
                auth = {"Authorization": self.headers["Authorization"]}
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.storage_url}/lfs/upload/{ticket}"},
                    "verify": {"href": f"{self.hub.url}/lfs/verify/{ticket}", "header": auth},
                }
            objects.append(answer)
        return self.json_answer({"transfer": "basic", "objects": objects}, content_type=LFS_CONTENT_TYPE)

    def xet_token(self, repo, kind, revision=None):
        raise HubError(
            HTTPStatus.NOT_IMPLEMENTED,
            "This test server has no Xet storage: set HF_HUB_DISABLE_XET=1 before importing huggingface_hub.",
        )

    def lfs_upload(self, ticket):
        # Like a presigned storage URL: the ticket is the credential.
        if ticket not in self.hub.store.uploads:
            raise HubError(HTTPStatus.FORBIDDEN, "Unknown or expired upload URL")
        repo, oid, size, _ = self.hub.store.uploads[ticket]
        if len(self.body) != size or hashlib.sha256(self.body).hexdigest() != oid:
            raise bad_request(f"The uploaded content does not match the announced sha256 {oid} and size {size}")
        self.hub.store.uploads[ticket] = (repo, oid, size, self.body)
        return HTTPStatus.OK, {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'}, b""

    def lfs_verify(self, ticket):
        if self.user() is None:
            raise HubError(HTTPStatus.UNAUTHORIZED, "The LFS verify action needs the uploader's credentials")
        repo, oid, size, content = self.hub.store.uploads.get(ticket, (None, None, None, None))
        request = self.json_body()
        if content is None or request.get("oid") != oid or request.get("size") != size:
            raise HubError(HTTPStatus.NOT_FOUND, f"Object {request.get('oid')} was not uploaded")
        repo.lfs_objects[oid] = content
        del self.hub.store.uploads[ticket]
        return self.json_answer({})

    def commit(self, repo, revision):
        repo = self.writable_repo(repo)
        base = repo.resolve(revision)  # a PR starts from `revision` too
        header, operations = self.parse_commit_body()
        parent = header.get("parentCommit")
        if parent is not None and parent != base.oid:
            raise HubError(HTTPStatus.PRECONDITION_FAILED, f"parentCommit {parent} is not the head of {revision}")
        files = dict(base.files)
        for key, value in operations:
            self.apply_operation(repo, files, key, value)
        create_pr = self.query.get("create_pr") == "1"
        if create_pr:
            number = 1 + sum(1 for ref in repo.refs if PR_REF.match(ref))
            branch = f"refs/pr/{number}"
            repo.refs[branch] = base.oid
        elif revision in repo.refs:
            branch = revision
        else:
            raise bad_request(f"Cannot commit to {revision}: it is not a branch")
        commit = self.hub.store.commit(repo, branch, files, header["summary"], header.get("description") or "")
        answer = {"commitUrl": f"{self.hub.url}/{repo.repo_id}/commit/{commit.oid}", "commitOid": commit.oid}
        answer["pullRequestUrl"] = f"{self.hub.url}/{repo.repo_id}/discussions/{number}" if create_pr else None
        return self.json_answer(answer)

    def parse_commit_body(self):
        if self.headers.get("Content-Type") != "application/x-ndjson":
            raise bad_request("A commit must be sent as application/x-ndjson")
        try:
            lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        except ValueError as error:
            raise bad_request(f"Invalid ndjson commit payload: {error}") from None
        if not lines or lines[0].get("key") != "header" or not isinstance(lines[0].get("value"), dict):
            raise bad_request("The first line of a commit must be its header")
        header = lines[0]["value"]
        if not isinstance(header.get("summary"), str) or not header["summary"].strip():
            raise bad_request("A commit needs a non-empty summary")
        operations = [(line.get("key"), line.get("value")) for line in lines[1:]]
        paths = [value.get("path") if isinstance(value, dict) else None for _, value in operations]
        if len(set(paths)) != len(paths):
            raise bad_request("A commit names the same path twice")
        return header, operations

    def apply_operation(self, repo: Repo, files: dict, key: str, value: dict):
        path = value.get("path") if isinstance(value, dict) else None
        if not valid_path(path):
            raise bad_request(f"Invalid path in commit operation {key}: {path!r}")
        if key == "file":
            if value.get("encoding") != "base64":
                raise bad_request(f"{path}: file content must be base64-encoded")
            try:
                data = base64.b64decode(value.get("content", ""), validate=True)
            except (binascii.Error, TypeError):
                raise bad_request(f"{path}: the content is not valid base64") from None
            if len(data) > MAX_REGULAR_FILE_SIZE:
                raise bad_request(f"{path}: files over {MAX_REGULAR_FILE_SIZE} bytes must be uploaded with LFS")
            files[path] = File(data, lfs=False)
        elif key == "lfsFile":
            oid = value.get("oid")
            if value.get("algo") != "sha256" or oid not in repo.lfs_objects:
                raise bad_request(f"{path}: LFS object {oid} was not uploaded to {repo.repo_id} and verified")
            data = repo.lfs_objects[oid]
            if value.get("size") not in (None, len(data)):
                raise bad_request(f"{path}: size {value['size']} does not match the LFS object ({len(data)})")
            files[path] = File(data, lfs=True)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(HTTPStatus.NOT_FOUND, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        else:
            raise bad_request(f"Unsupported commit operation {key!r}")

    # --- downloads ------------------------------------------------------------------------------

    def model_info(self, repo, revision="main"):
        repo_id = repo
        repo = self.readable_repo(repo_id)
        commit = repo.resolve(revision)
        blobs = self.query.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, file in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling.update(size=len(file.data), blobId=file.blob_id)
                if file.lfs:
                    sibling["lfs"] = {"sha256": file.sha256, "size": len(file.data), "pointerSize": len(file.pointer)}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "siblings": siblings,
        }
        return self.json_answer({**info, **self.card_info(commit)})

    def card_info(self, commit: Commit) -> dict:
        """What the Hub derives from the README metadata and config.json."""
        info = {"tags": []}
        if "README.md" in commit.files:
            card = parse_card_metadata(commit.files["README.md"].data.decode())
            info.update(cardData=card, tags=list(card.get("tags") or []))
            info.update({key: card[key] for key in ("pipeline_tag", "library_name", "model-index") if key in card})
        if "config.json" in commit.files:
            info["config"] = json.loads(commit.files["config.json"].data)
        return info

    def tree(self, repo, revision, path=""):
        commit = self.readable_repo(repo).resolve(revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        entries, folders = [], set()
        for file_path, file in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(prefix + "/".join(parts[:depth]))
            if len(parts) == 1 or recursive:
                entry = {"type": "file", "oid": file.blob_id, "size": len(file.data), "path": file_path}
                if file.lfs:
                    entry["lfs"] = {"oid": file.sha256, "size": len(file.data), "pointerSize": len(file.pointer)}
                entries.append(entry)
        if prefix and not entries and not folders:
            raise HubError(HTTPStatus.NOT_FOUND, f"{path} does not exist at {revision}", "EntryNotFound")
        # A stand-in for the git tree id: stable per folder name, which is all that clients use it for.
        entries += [
            {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder}
            for folder in sorted(folders)
        ]
        return self.json_answer(entries)

    def resolve(self, repo, revision, path):
        commit = self.readable_repo(repo).resolve(revision)
        file = commit.files.get(path)
        if file is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"{path} does not exist at {revision}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if file.lfs:
            # As the Hub: LFS content comes from storage, through a redirect that names its sha256 and size.
            headers.update(
                {
                    "Location": f"{self.hub.storage_url}/lfs/objects/{repo}/{file.sha256}",
                    "ETag": f'"{file.blob_id}"',
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(len(file.data)),
                }
            )
            return HTTPStatus.FOUND, headers, b""
        headers.update({"ETag": f'"{file.blob_id}"', "Content-Type": "application/octet-stream"})
        return self.content(file.data, headers)

    def lfs_download(self, repo, sha256):
        # Like a presigned storage URL: knowing the address is the credential.
        data = self.hub.store.repos[repo].lfs_objects.get(sha256) if repo in self.hub.store.repos else None
        if data is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"No LFS object {sha256}")
        return self.content(data, {"ETag": f'"{sha256}"', "Content-Type": "application/octet-stream"})

    def content(self, data: bytes, headers: dict):
        """The body, or the part a `Range: bytes=start-[end]` header asks for (resumed downloads)."""
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if not match:
            return HTTPStatus.OK, headers, data
        start, end = int(match.group(1)), int(match.group(2) or len(data) - 1)
        if start >= len(data) or end < start:
            raise HubError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f"Range {start}-{end} is outside the file")
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return HTTPStatus.PARTIAL_CONTENT, headers, data[start : end + 1]


class HubServer:
    """The server: `start()` serves in a background thread, `url` is its endpoint, `tokens` maps access
    tokens to user names. `log` lists (method, path, status) of every request; `inject_failure` makes
    chosen requests fail; `repo(repo_id)` is the stored repository, for assertions."""

    def __init__(self, tokens: dict, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None):
        self.tokens = dict(tokens)
        self.store = HubStore()
        self.log: list[tuple] = []
        self.failures: list[Failure] = []
        self.httpd = ThreadingHTTPServer((host, port), HubRequestHandler, bind_and_activate=sock is None)
        if sock is not None:
            # A socket bound earlier, so that HF_ENDPOINT could be set before the clients were imported.
            self.httpd.socket.close()
            self.httpd.socket = sock
            self.httpd.server_address = sock.getsockname()
        self.httpd.daemon_threads = True
        self.httpd.hub = self
        self.thread = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def storage_url(self) -> str:
        """Where LFS content is uploaded to and downloaded from. The Hub uses a storage host of its own, and
        clients treat another host differently (no credentials, no redirect following), so this names the
        same socket by another host name."""
        return f"http://localhost:{self.httpd.server_address[1]}"

    def start(self) -> "HubServer":
        if self.thread is None:
            self.thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)
            self.thread.start()
        return self

    def stop(self):
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join()
            self.thread = None
        self.httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def inject_failure(self, method: str, path_pattern: str, status: int = 500, times: int = 1):
        """Answer the next `times` requests whose method and path (a regex searched in the path) match with
        an HTTP `status` error, as a failing Hub would."""
        self.failures.append(Failure(method, re.compile(path_pattern), status, times))

    def check_injected_failure(self, method: str, path: str):
        for failure in self.failures:
            if failure.times > 0 and failure.method == method and failure.pattern.search(path):
                failure.times -= 1
                raise HubError(failure.status, f"Injected failure of {method} {path}")

    def repo(self, repo_id: str) -> Repo:
        return self.store.repos[repo_id]

    def files(self, repo_id: str, revision: str = "main") -> dict:
        """{path: content} of a repository at a revision."""
        return {path: file.data for path, file in self.repo(repo_id).resolve(revision).files.items()}


def main():
    import argparse

    parser = argparse.ArgumentParser(description="Serve an empty local Hub (in memory) until interrupted.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token", default="hf_local", help="Access token accepted for the user (default: hf_local).")
    parser.add_argument("--user", default="user", help="User name of the token (default: user).")
    args = parser.parse_args()
    server = HubServer({args.token: args.user}, port=args.port)
    print(
        f"Serving a local Hub at {server.url}: export HF_ENDPOINT={server.url} HF_TOKEN={args.token} HF_HUB_DISABLE_XET=1",
        flush=True,
    )
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

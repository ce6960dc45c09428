"""The repositories of the local test Hub: files, commits and branches in memory, the LFS objects uploaded to
them, and the rules the Hub applies to stored paths (which files go to LFS, which paths are valid)."""

import fnmatch
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus

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


# Repository types the server hosts -> the prefix of their paths in URLs (as on the Hub: /api/spaces/...,
# /spaces/user/name/resolve/...); the store keys repositories by that prefixed path, so a model and a Space
# may share an id.
REPO_TYPES = {"model": "", "space": "spaces/", "dataset": "datasets/"}
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")


def repo_key(repo_id: str, repo_type: str = "model") -> str:
    return REPO_TYPES[repo_type] + repo_id


@dataclass
class Repo:
    repo_id: str
    private: bool
    repo_type: str = "model"
    sdk: str | None = None  # a Space's
    created_at: str = field(default_factory=now)
    refs: dict = field(default_factory=dict)  # "main", other branches and "refs/pr/N" -> commit oid
    commits: dict = field(default_factory=dict)  # oid -> Commit
    lfs_objects: dict = field(default_factory=dict)  # sha256 -> content, once uploaded and verified

    @property
    def key(self) -> str:
        """The store's key and the path of the repository in URLs: `user/name`, `spaces/user/name`."""
        return repo_key(self.repo_id, self.repo_type)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

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
        self.repos: dict[str, Repo] = {}  # by `Repo.key`
        self.uploads: dict[str, tuple] = {}  # ticket -> (repo, sha256, size, uploaded content or None)
        self.counter = itertools.count()

    def commit(self, repo: Repo, branch: str, files: dict, title: str, description: str = "") -> Commit:
        parent = repo.refs.get(branch)
        payload = json.dumps([parent, sorted((p, f.blob_id) for p, f in files.items()), title, next(self.counter)])
        commit = Commit(hashlib.sha1(payload.encode()).hexdigest(), parent, files, title, description, now())
        repo.commits[commit.oid] = commit
        repo.refs[branch] = commit.oid
        return commit


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

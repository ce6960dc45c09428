"""The request handler of the local test Hub: routing, request and answer plumbing, authentication, and the
account and repository endpoints. Uploads and downloads are the `UploadEndpoints` and `DownloadEndpoints`
mixins of uploads.py and downloads.py."""

import json
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from .cards import card_metadata_errors, parse_card_metadata, space_metadata_errors
from .downloads import DownloadEndpoints
from .storage import (
    DEFAULT_GITATTRIBUTES,
    REPO_NAME,
    REPO_TYPES,
    SPACE_SDKS,
    File,
    HubError,
    Repo,
    bad_request,
    repo_key,
    valid_path,
)
from .uploads import UploadEndpoints

if TYPE_CHECKING:
    from .server import HubServer

# (method, path pattern, handler name); patterns match the raw (still percent-encoded) path. Models, Spaces and
# datasets share the endpoints: `kind` (models|spaces|datasets) or a `spaces/` / `datasets/` prefix (`space`)
# names a Space's or a dataset's, and `dispatch` passes the endpoint the repository's store key (`Repo.key`:
# user/name, spaces/user/name, datasets/user/name) as `repo`.
REPO = r"(?P<repo>[^/]+/[^/]+)"
KIND = r"(?P<kind>models|spaces|datasets)"
SPACE = r"(?P<space>spaces/|datasets/)?"
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("POST", rf"/api/{KIND}/{REPO}/branch/(?P<branch>.+)", "create_branch"),
    ("POST", rf"/api/{KIND}/{REPO}/preupload/(?P<revision>[^/]+)", "preupload"),
    ("POST", rf"/api/{KIND}/{REPO}/commit/(?P<revision>[^/]+)", "commit"),
    ("GET", rf"/api/{KIND}/{REPO}(?:/revision/(?P<revision>[^/]+))?", "model_info"),
    ("GET", rf"/api/{KIND}/{REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", rf"/{SPACE}{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
    ("GET", rf"/api/{KIND}/{REPO}/xet-(?P<access>read|write)-token(?:/(?P<revision>[^/]+))?", "xet_token"),
    ("PUT", r"/lfs/upload/(?P<ticket>\w+)", "lfs_upload"),
    ("POST", r"/lfs/verify/(?P<ticket>\w+)", "lfs_verify"),
    ("GET", rf"/lfs/objects/{SPACE}{REPO}/(?P<sha256>[0-9a-f]{{64}})", "lfs_download"),
    ("HEAD", rf"/lfs/objects/{SPACE}{REPO}/(?P<sha256>[0-9a-f]{{64}})", "lfs_download"),
    ("GET", rf"/{SPACE}{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", "resolve"),
    ("HEAD", rf"/{SPACE}{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", "resolve"),
]
ROUTES = [(method, re.compile(pattern + "$"), name) for method, pattern, name in ROUTES]


class HubRequestHandler(UploadEndpoints, DownloadEndpoints, BaseHTTPRequestHandler):
    """One request: `dispatch` finds its route and runs the endpoint method of that name (the uploads and
    downloads come from their mixins) under the store's lock; a `HubError` becomes the Hub's error answer."""

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
                    kind, prefix = params.pop("kind", None), params.pop("space", None)
                    if kind in ("spaces", "datasets") or prefix:
                        params["repo"] = repo_key(params["repo"], (kind or prefix.rstrip("/"))[:-1])
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

    def readable_repo(self, key: str) -> Repo:
        """The repository of a store key (`Repo.key`) that the request may read."""
        repo = self.hub.store.repos.get(key)
        if repo is None or (repo.private and self.user() != repo.owner):
            # The Hub does not reveal whether a private repository exists.
            raise HubError(HTTPStatus.UNAUTHORIZED, f"Repository Not Found for url: {self.path}.", "RepoNotFound")
        return repo

    def writable_repo(self, key: str) -> Repo:
        user = self.user()
        if user is None:
            raise HubError(HTTPStatus.UNAUTHORIZED, "You must be authenticated to write to a repository")
        repo = self.readable_repo(key)
        if repo.owner != user:
            raise HubError(HTTPStatus.FORBIDDEN, f"You don't have the rights to write to {repo.repo_id}")
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
        repo_type = request.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise bad_request(f"This test server hosts model, space and dataset repositories, not {repo_type!r}")
        sdk = request.get("sdk")
        if repo_type == "space" and sdk not in SPACE_SDKS:
            raise bad_request(f"A Space needs an sdk, one of {', '.join(SPACE_SDKS)}; got {sdk!r}")
        if namespace != user:
            raise HubError(HTTPStatus.FORBIDDEN, f"You don't have the rights to create a repository under {namespace!r}")
        repo_id = f"{namespace}/{name}"
        key = repo_key(repo_id, repo_type)
        url = f"{self.hub.url}/{key}"
        if key in self.hub.store.repos:
            raise HubError(HTTPStatus.CONFLICT, f"You already created this {repo_type} repo", extra={"url": url})
        private = request.get("visibility", "private" if request.get("private") else "public") != "public"
        repo = self.hub.store.repos[key] = Repo(repo_id, private, repo_type, sdk if repo_type == "space" else None)
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
        repo_type = request.get("repoType", "model")
        if not isinstance(request.get("content"), str) or repo_type not in REPO_TYPES:
            raise bad_request('validate-yaml expects {"content": str, "repoType": "model", "space" or "dataset"}')
        checks = {"space": space_metadata_errors, "dataset": lambda metadata: []}  # dataset cards: not checked here
        check = checks.get(repo_type, card_metadata_errors)
        try:
            errors = check(parse_card_metadata(request["content"]))
        except (ValueError, yaml.YAMLError) as error:
            errors = [f"Invalid YAML metadata: {error}"]
        if errors:
            body = json.dumps({"errors": [{"message": message} for message in errors]}).encode()
            return HTTPStatus.BAD_REQUEST, {"Content-Type": "application/json"}, body
        return self.json_answer({"errors": [], "warnings": []})

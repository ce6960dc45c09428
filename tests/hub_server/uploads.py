"""Upload endpoints of the local test Hub: preupload (regular or LFS), the LFS batch / upload / verify flow
and commits, including pull requests. A mixin of `HubRequestHandler` (handler.py), which supplies the
request plumbing (`body`, `query`, `json_body`, `json_answer`) and the repository access checks."""

import base64
import binascii
import hashlib
import json
import secrets
from http import HTTPStatus

from .storage import (
    LFS_CONTENT_TYPE,
    MAX_REGULAR_FILE_SIZE,
    PR_REF,
    SHA256,
    File,
    HubError,
    Repo,
    bad_request,
    upload_mode,
    valid_path,
)


class UploadEndpoints:
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

    def xet_token(self, repo, access, revision=None):
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
        answer = {"commitUrl": f"{self.hub.url}/{repo.key}/commit/{commit.oid}", "commitOid": commit.oid}
        answer["pullRequestUrl"] = f"{self.hub.url}/{repo.key}/discussions/{number}" if create_pr else None
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

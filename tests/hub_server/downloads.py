"""Download endpoints of the local test Hub: model and Space info (with what the Hub derives from the card),
file trees, `resolve` (regular files, and LFS files through a storage redirect) and ranged content. A mixin of
`HubRequestHandler` (handler.py)."""

import hashlib
import json
import re
from http import HTTPStatus

from .cards import parse_card_metadata
from .storage import Commit, HubError


class DownloadEndpoints:
    def model_info(self, repo, revision="main"):
        """The repository's info (`model_info`, or `space_info` / `dataset_info`)."""
        repo = self.readable_repo(repo)
        repo_id = repo.repo_id
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
        if repo.repo_type != "model":
            info.pop("modelId")
        if repo.repo_type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "BUILDING", "hardware": {"current": None, "requested": None}})
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

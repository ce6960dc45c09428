"""The local test Hub server: a threading HTTP server around the store, with the request log and injected
failures that tests assert on."""

import re
import socket
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from .handler import HubRequestHandler
from .storage import HubError, HubStore, Repo, repo_key


@dataclass
class Failure:
    """An injected failure: the next `times` requests matching method and path pattern get `status`."""

    method: str
    pattern: re.Pattern
    status: int
    times: int


class HubServer:
    """The server: `start()` serves in a background thread, `url` is its endpoint, `tokens` maps access
    tokens to user names. `log` lists (method, path, status) of every request; `inject_failure` makes
    chosen requests fail; `repo(repo_id[, repo_type])` is the stored repository, for assertions."""

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

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.store.repos[repo_key(repo_id, repo_type)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict:
        """{path: content} of a repository (a model, or with repo_type="space" a Space) at a revision."""
        return {path: file.data for path, file in self.repo(repo_id, repo_type).resolve(revision).files.items()}

"""A local Hugging Face Hub for tests: the HTTP endpoints that `huggingface_hub` and `transformers` use to
create repositories (models and Spaces), upload (regular and LFS files) and download, over a real socket on
127.0.0.1.

Repositories live in memory as commits of file trees, so tests can look at what arrived. The server is
strict where the Hub is: malformed requests get 400, uploaded content must match its sha256, commits may
only reference verified LFS objects, and errors carry the `X-Error-Code` headers the client maps to its
exceptions. Xet storage is not implemented: clients must run with `HF_HUB_DISABLE_XET=1`.

Usage (set `HF_ENDPOINT` to `server.url` before `huggingface_hub` is imported; see tests/conftest_hub.py)::

    server = HubServer(tokens={"hf_test": "user"}).start()
    ...
    server.stop()

Layout: storage.py (repositories, commits, LFS objects), cards.py (model card metadata checks), handler.py
(routing, authentication, repository endpoints), uploads.py and downloads.py (their endpoints), server.py
(the server, request log and injected failures). `python -m tests.hub_server` serves one for manual use.

Nothing here imports `huggingface_hub`, `transformers` or `segformer`, so tests/conftest_hub.py can import it
before or after it sets HF_ENDPOINT.
"""

from .server import Failure, HubServer
from .storage import Commit, File, HubError, HubStore, Repo

__all__ = ["Commit", "Failure", "File", "HubError", "HubServer", "HubStore", "Repo"]

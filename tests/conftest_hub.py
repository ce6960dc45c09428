"""The local Hub server of the test session (a pytest plugin that the root conftest.py loads first).

`huggingface_hub` and `transformers` read HF_ENDPOINT, HF_HOME and HF_HUB_DISABLE_XET when they are
imported, and the other conftests and tests import them early. So at import time this module binds the
server's socket (to learn its port), points the environment at it, and only then imports the server
(tests/hub_server, which itself imports neither client nor `segformer`; importing it last keeps it that way
should that change). The session's Hub cache and module cache live in a temporary HF_HOME, and the token of
the test user is HF_TOKEN, as after `hf auth login`.
"""

import atexit
import itertools
import os
import re
import shutil
import socket
import sys
import tempfile

import pytest

HUB_USER = "user"
HUB_TOKEN = "hf_segformer_local_test_token"

if "huggingface_hub" in sys.modules:
    raise RuntimeError(
        "huggingface_hub was imported before tests/conftest_hub.py could point HF_ENDPOINT at the local test "
        "Hub, so the tests would talk to the real one. Load this plugin first (the root conftest.py does)."
    )

_socket = socket.create_server(("127.0.0.1", 0))
_hf_home = tempfile.mkdtemp(prefix="segformer-test-hf-home-")
atexit.register(shutil.rmtree, _hf_home, ignore_errors=True)
# These would override the locations derived from HF_HOME, or keep the clients offline.
for _name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE", "HF_TOKEN_PATH",
              "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(_name, None)
os.environ.update(
    HF_ENDPOINT=f"http://127.0.0.1:{_socket.getsockname()[1]}",
    HF_HOME=_hf_home,
    HF_HUB_DISABLE_XET="1",  # Xet needs a content-addressed store that the test server does not run
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_TOKEN=HUB_TOKEN,
)

from tests.hub_server import HubServer  # noqa: E402  (after the environment, see the docstring)

_server = HubServer({HUB_TOKEN: HUB_USER}, sock=_socket)
_repo_numbers = itertools.count()


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The running local Hub that HF_ENDPOINT points at."""
    from huggingface_hub import constants

    assert constants.ENDPOINT == _server.url, f"huggingface_hub uses {constants.ENDPOINT}, not the test Hub {_server.url}"
    yield _server.start()
    _server.stop()


@pytest.fixture(scope="session")
def hub_user() -> str:
    """The user whose token is HF_TOKEN: repositories under this name are writable."""
    return HUB_USER


@pytest.fixture
def hub_repo_id(hub_server, request) -> str:
    """A fresh repository id of the test user (the repository does not exist yet)."""
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")[:80]
    return f"{HUB_USER}/{name}-{next(_repo_numbers)}"

"""Loaded by pytest before tests/conftest.py: the local Hub test server (tests/hub_server, started by
tests/conftest_hub.py) must set HF_ENDPOINT before anything imports huggingface_hub or transformers."""

pytest_plugins = ["tests.conftest_hub"]

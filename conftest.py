"""Loaded by pytest before tests/conftest.py: the local Hub test server must set HF_ENDPOINT before anything
imports huggingface_hub or transformers (see tests/conftest_hub.py)."""

pytest_plugins = ["tests.conftest_hub"]

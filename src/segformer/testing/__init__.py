"""Test helpers that other projects' tests can use too: a local Hugging Face Hub server."""

"""The README is a front page and the docs hold the rest: the README stays small, opens with the two set-up
commands that `.ci/run` relies on, reaches every docs page, and no relative link or anchor in the README or
docs/ points at nothing."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_BYTES = 12_000

# The main job, then the tests: `.ci/run` runs the second line, so both stay word for word.
SETUP_COMMANDS = [
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e ".[train]" && segformer train',
    "(command -v chromium || (apt-get update && apt-get install -y chromium)) && python3 -m venv .venv"
    ' && . .venv/bin/activate && pip install torch==2.13.0 -e ".[test]" && pytest',
]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without code blocks and inline code, where bracketed text is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def anchors(page: Path) -> set:
    """The heading anchors GitHub gives a Markdown page: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", FENCE.sub("", page.read_text(encoding="utf-8")), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def relative_links(page: Path) -> list:
    return [t for t in LINK.findall(prose(page.read_text(encoding="utf-8"))) if not re.match(r"[a-z]+:", t)]


def test_readme_is_a_front_page():
    size = README.stat().st_size
    assert size < MAX_README_BYTES, f"README.md is {size} bytes; move detail to docs/ (limit {MAX_README_BYTES})"


def test_readme_opens_with_the_setup_commands():
    text = README.read_text(encoding="utf-8")
    first_block = FENCE.search(text)
    assert first_block is not None and text[: first_block.start()].strip() == "# segformer"
    assert first_block.group(1).splitlines() == SETUP_COMMANDS
    assert SETUP_COMMANDS[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_links_every_docs_page():
    linked = {(README.parent / target.split("#")[0]).resolve() for target in relative_links(README)}
    assert DOCS and not [page.name for page in DOCS if page.resolve() not in linked]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda page: page.name)
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading in {file.name})")
    assert not broken, f"{page.name}: broken links: {broken}"

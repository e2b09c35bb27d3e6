"""The README's Python examples run, in order, in one namespace, as a reader would paste them.

Every ```` ```python ```` block of README.md is executed top to bottom in a
single namespace (a later block may use what an earlier one defined), in a
temporary working directory. A block that cannot run here (it needs a server
the suite does not start, say) is skipped only when the line before it (blank
lines aside) is exactly ``<!-- readme-test: skip -->``; nothing else skips one.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
import structlog

README = Path(__file__).resolve().parent.parent / "README.md"
SKIP_MARKER = "<!-- readme-test: skip -->"
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


@attrs.frozen
class Block:
    """One fenced Python block: the README line its code starts on, the code, and its skip mark."""

    line: int
    code: str
    skipped: bool


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of ``text`` in order, each marked skipped if the marker precedes it."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = [line for line in text[: match.start()].splitlines() if line.strip()]
        skipped = bool(before) and before[-1].strip() == SKIP_MARKER
        line = text.count("\n", 0, match.start(1)) + 1
        blocks.append(Block(line=line, code=match.group(1), skipped=skipped))
    return blocks


def test_python_blocks_finds_code_and_honours_only_the_exact_marker() -> None:
    """The parser finds each block with its line and skips only those right after the marker."""
    text = (
        "intro\n```python\nx = 1\n```\n"
        f"{SKIP_MARKER}\n\n```python\nraise SystemExit\n```\n"
        "<!-- readme-test: skip please -->\n```python\ny = x + 1\n```\n"
        "```bash\nnot python\n```\n"
    )
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.skipped) for b in blocks] == [
        (3, "x = 1\n", False),
        (8, "raise SystemExit\n", True),
        (12, "y = x + 1\n", False),
    ]


def test_readme_has_python_examples_that_run() -> None:
    """The README shows Python examples, and not all of them are skipped."""
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert any(not block.skipped for block in blocks)


def test_every_skip_marker_sits_on_a_python_block() -> None:
    """A skip marker not followed by a python block is a typo that would hide nothing."""
    text = README.read_text(encoding="utf-8")
    markers = text.count(SKIP_MARKER)
    assert markers == sum(block.skipped for block in python_blocks(text))


def test_readme_python_examples_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each README python block runs after the ones above it, in one namespace, without error."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    try:
        for block in python_blocks(README.read_text(encoding="utf-8")):
            if block.skipped:
                continue
            code = compile(block.code, f"README.md (block at line {block.line})", "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                pytest.fail(
                    f"README.md block at line {block.line} raised {type(exc).__name__}: {exc}"
                )
    finally:  # an example may configure structlog; the rest of the suite must not inherit it
        if was_configured:
            structlog.configure(**config)
        else:
            structlog.reset_defaults()

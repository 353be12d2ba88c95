"""Every relative link in the README, the changelog and docs/ resolves.

A link (or image) to a file must name a file or folder that exists, and a `#anchor` must name
a heading of the markdown file it points into, by GitHub's slug rules. Links inside code
(fenced blocks and inline spans) are not links and are left alone, as GitHub leaves them.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# `](target)` or `](target "title")`, or `](<target with spaces>)`: the closing half of every
# inline link and image, which also finds a link whose text is an image.
INLINE_LINK = re.compile(r"\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=[\"']([^\"']+)[\"']", re.I)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:name|id)=[\"']([^\"']+)[\"']", re.I)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# A link to a line of a source file on GitHub: `file.py#L10` or `#L10-L20`.
LINE_ANCHOR = re.compile(r"^L\d+(?:-L\d+)?$")


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose links are checked: README.md, CHANGELOG.md and every page under docs/."""
    paths = [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").rglob("*.md"))]
    return [path for path in paths if path.is_file()]


def prose_lines(text: str, keep_code: bool = False) -> list[tuple[int, str]]:
    """(line number, line) for the lines outside fenced code blocks, inline code removed
    unless `keep_code` (a heading's code spans are part of its anchor)."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
            continue
        if fence is not None:
            # A fence closes with the same character, at least as long as it opened.
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            continue
        lines.append((number, line if keep_code else INLINE_CODE.sub("", line)))
    return lines


def heading_text(markdown: str) -> str:
    """What GitHub renders of a heading's markdown: code spans keep their text, links their
    label, images and HTML tags nothing, emphasis markers nothing."""
    text = re.sub(r"(`+)((?:(?!\1).)+?)\1", r"\2", markdown)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)


def slug(text: str) -> str:
    """GitHub's anchor for a heading's rendered text: lower case, every character that is not
    a letter, digit, space, hyphen or underscore dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a markdown file offers: its headings' slugs (a repeated slug gets -1, -2,
    as GitHub numbers them) and explicit `<a name=...>` / `id=...` anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    previous = ""
    for _, line in prose_lines(path.read_text(encoding="utf-8"), keep_code=True):
        title = None
        atx = ATX_HEADING.match(line)
        if atx:
            title = atx.group(2)
        elif (SETEXT_UNDERLINE.match(line) and previous.strip()
              and not re.match(r"^\s*([#>|*+-]|\d+[.)])", previous)):
            title = previous
        if title is not None:
            base = slug(heading_text(title))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(match.lower() for match in HTML_ANCHOR.findall(line))
        previous = line
    return found


def link_targets(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in a markdown file's prose."""
    targets = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for pattern in (INLINE_LINK, REFERENCE_DEFINITION, HTML_LINK):
            for target in pattern.findall(line):
                targets.append((number, target.strip("<>")))
    return targets


def broken_links(path: Path) -> list[str]:
    """`file:line: target: why` for each relative link of `path` that does not resolve."""
    problems = []
    for number, target in link_targets(path):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a web address or mailto: not this repository's to check
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.name}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file")
        elif anchor and destination.suffix.lower() == ".md" and destination.is_file():
            if unquote(anchor).lower() not in anchors(destination):
                problems.append(f"{where}: no heading with that anchor in {destination.name}")
        elif anchor and not LINE_ANCHOR.match(anchor):
            problems.append(f"{where}: an anchor into a file that is not markdown")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_pages_are_there_and_link_somewhere():
    names = {path.relative_to(ROOT).as_posix() for path in documents()}
    assert {"README.md", "CHANGELOG.md", "docs/index.md"} <= names
    readme_links = [target for _, target in link_targets(ROOT / "README.md")]
    assert any(target.startswith("docs/") for target in readme_links)


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# A page: with `code`, punctuation & GPT-2\n\n## Twice\n\n## Twice\n", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "README.md").write_text(
        "# Title\n\n"
        "Good: [page](docs/page.md#a-page-with-code-punctuation--gpt-2),"
        " [second](docs/page.md#twice-1), [here](#title), ![chart](image.png),"
        " [web](https://example.com/missing.md).\n"
        "Broken: [gone](docs/missing.md) and ![lost](missing.png).\n"
        "Bad anchor: [nowhere](docs/page.md#no-such-heading) and [here too](#nope).\n"
        "```\n[in a code block](docs/missing.md)\n```\n"
        "Inline `[code](docs/missing.md)` is not a link.\n",
        encoding="utf-8")
    problems = broken_links(tmp_path / "README.md")
    assert problems == [
        "README.md:4: docs/missing.md: no such file",
        "README.md:4: missing.png: no such file",
        "README.md:5: docs/page.md#no-such-heading: no heading with that anchor in page.md",
        "README.md:5: #nope: no heading with that anchor in README.md",
    ]
    with pytest.raises(AssertionError):
        test_every_relative_link_resolves(tmp_path / "README.md")


@pytest.mark.parametrize(("heading", "anchor"), [
    ("A real decoder offline: SmolLM2-135M from a GGUF file",
     "a-real-decoder-offline-smollm2-135m-from-a-gguf-file"),
    ("Decoder models (Llama, Qwen, Mistral, Gemma, GPT-2)",
     "decoder-models-llama-qwen-mistral-gemma-gpt-2"),
    ("Set-up: two commands", "set-up-two-commands"),
    ("What `peft-arena report` writes", "what-peft-arena-report-writes"),
    ("Bad rows & test leaks", "bad-rows--test-leaks"),
    ("memory_tools and **bold**", "memory_tools-and-bold"),
])
def test_slugs_follow_githubs_rules(heading, anchor):
    assert slug(heading_text(heading)) == anchor

"""Markdown to one self-contained HTML page: local images are embedded as base64 data, and the
styling is inline, so the file can be mailed, attached to a CI run or opened offline."""

from __future__ import annotations

import base64
import html
import mimetypes
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1f2328; line-height: 1.5; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0 1.5rem; }
code { background: #f6f8fa; padding: 0.1rem 0.3rem; border-radius: 4px; }
"""


def _parser() -> MarkdownIt:
    # Raw HTML stays off: task, class and strategy names come from user files and are
    # escaped rather than interpreted.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _embed_images(tokens: list[Token], base: Path) -> None:
    for token in tokens:
        for child in token.children or []:
            if child.type != "image":
                continue
            src = str(child.attrGet("src") or "")
            if "://" in src or src.startswith("data:"):
                continue
            uri = _data_uri(base / src)
            if uri is not None:
                child.attrSet("src", uri)


def render_page(markdown: str, base: Path, title: str, explorer: str = "") -> str:
    """The page for `markdown`; images with paths relative to `base` are embedded.
    `explorer`: HTML shown above the leaderboard (report.explorer), which holds its own
    scripts; the leaderboard itself stays in `<div id="leaderboard">`."""
    parser = _parser()
    tokens = parser.parse(markdown)
    _embed_images(tokens, Path(base))
    body = parser.renderer.render(tokens, parser.options, {})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{explorer}<div id=\"leaderboard\">\n{body}</div>\n</body>\n</html>\n"
    )

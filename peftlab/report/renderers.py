"""The report as a document: a list of blocks (Heading, Paragraph, Bullets, Table, Image) that
tables.py builds once and that is rendered twice, as Markdown (report.md, readable in a terminal
and on any forge) and as one self-contained HTML page (report.html). Inline text uses only
`code` and **bold**, so HTML needs no Markdown library."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: bool = False  # right-align every column but the first


@dataclass
class Image:
    alt: str
    path: Path


class Bold(str):
    """A table cell shown in bold: the best method within a budget."""


Block = Heading | Paragraph | Bullets | Table | Image




def to_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(_markdown(block) for block in blocks) + "\n"


def _markdown(block: Block) -> str:
    match block:
        case Heading(text, level):
            return "#" * level + " " + text
        case Paragraph(text):
            return text
        case Bullets(items):
            return "\n".join(f"- {item}" for item in items)
        case Table(headers, rows):
            lines = [headers, *rows]
            rule = "|" + "".join("---:|" if block.numeric and i else "---|" for i in range(len(headers)))
            rendered = ["| " + " | ".join(_markdown_cell(cell) for cell in line) + " |" for line in lines]
            return "\n".join([rendered[0], rule, *rendered[1:]])
        case Image(alt, path):
            return f"![{alt}]({path.name})"
    raise TypeError(f"no Markdown for {block!r}")


def _markdown_cell(cell: str) -> str:
    text = cell.replace("|", "\\|")
    return f"**{text}**" if isinstance(cell, Bold) else text


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 78rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
table.numeric td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0 0.2rem; }
img { max-width: 100%; }
"""


def to_html(blocks: list[Block]) -> str:
    """One file with everything inside (CSS inline, PNGs as data URIs): it can be mailed or
    attached to a ticket and still shows the plots."""
    body = "\n".join(_html(block) for block in blocks)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>peftlab report</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _html(block: Block) -> str:
    match block:
        case Heading(text, level):
            return f"<h{level}>{_inline(text)}</h{level}>"
        case Paragraph(text):
            return f"<p>{_inline(text)}</p>"
        case Bullets(items):
            return "<ul>\n" + "\n".join(f"<li>{_inline(item)}</li>" for item in items) + "\n</ul>"
        case Table(headers, rows):
            head = "<tr>" + "".join(f"<th>{_inline(header)}</th>" for header in headers) + "</tr>"
            body = "\n".join("<tr>" + "".join(f"<td>{_html_cell(cell)}</td>" for cell in row) + "</tr>" for row in rows)
            css = ' class="numeric"' if block.numeric else ""
            return f"<table{css}>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"
        case Image(alt, path):
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'
    raise TypeError(f"no HTML for {block!r}")


def _html_cell(cell: str) -> str:
    return f"<strong>{_inline(cell)}</strong>" if isinstance(cell, Bold) else _inline(cell)


def _inline(text: str) -> str:
    """Escaped text; `code` and **bold** spans (the only Markdown the blocks use) as HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]*)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)

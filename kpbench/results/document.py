"""The report as a list of blocks, and its two renderers: Markdown and one HTML file.

A :class:`Document` is built from tables and figures (see :mod:`kpbench.results.report`);
``render_markdown`` writes it for terminals and diffs (images as relative links),
``render_html`` as one self-contained page (PNGs as data URIs, interactive charts with
their JavaScript inlined: it works offline, mailed or attached on its own).

Every string of a block is text, never markup, in both renderers (escaped by
:mod:`kpbench.results.escape`): a paragraph marks code and bold with :class:`Code` and
:class:`Bold` parts, and only a :class:`Raw` block carries HTML of its own.
"""
from __future__ import annotations

import base64
import os
import pathlib
from dataclasses import dataclass, field

from kpbench.results.escape import html_text, markdown_code, markdown_link, markdown_text


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Code:
    """A part of a Para shown as code."""
    text: str


@dataclass(frozen=True)
class Bold:
    """A part of a Para shown in bold."""
    text: str


@dataclass
class Para:
    """Plain text, or a list of plain strings, Code and Bold parts."""
    text: str | list


@dataclass
class Lines:
    lines: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: pathlib.Path
    caption: str


@dataclass
class Raw:
    """HTML only (an interactive chart); Markdown shows ``note`` instead, if any."""
    html: str
    note: str = ""


@dataclass
class Details:
    """A block folded in HTML (``<details>``), laid out plainly in Markdown."""
    summary: str
    blocks: list


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)
    head_html: str = ""          # scripts/styles the Raw blocks need (HTML only)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)


def render_markdown(doc: Document, out_dir: pathlib.Path) -> str:
    return "\n".join([f"# {markdown_text(doc.title)}", ""] + _markdown_blocks(doc.blocks, out_dir))


def _markdown_blocks(blocks, out_dir: pathlib.Path) -> list[str]:
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + markdown_text(block.text), ""]
        elif isinstance(block, Para):
            out += [_markdown_inline(block.text), ""]
        elif isinstance(block, Lines):
            out += [f"- {markdown_text(line)}" for line in block.lines] + [""]
        elif isinstance(block, Table):
            out += _markdown_table(block) + [""]
        elif isinstance(block, Image):
            link = pathlib.Path(os.path.relpath(block.path, out_dir)).as_posix()
            out += [f"![{markdown_text(block.caption)}]({markdown_link(link)})", ""]
        elif isinstance(block, Raw) and block.note:
            out += [markdown_text(block.note), ""]
        elif isinstance(block, Details):
            out += [_markdown_part(Bold(block.summary)), ""] + _markdown_blocks(block.blocks, out_dir)
    return out


def _parts(text: str | list) -> list:
    return [text] if isinstance(text, str) else list(text)


def _markdown_inline(text: str | list) -> str:
    return "".join(_markdown_part(part) for part in _parts(text))


def _markdown_part(part) -> str:
    if isinstance(part, Code):
        return markdown_code(part.text)
    if isinstance(part, Bold):
        return f"**{markdown_text(part.text)}**"
    return markdown_text(part)


def _markdown_table(table: Table) -> list[str]:
    def line(cells):
        return "| " + " | ".join(markdown_text(c) for c in cells) + " |"
    if not table.rows:
        return ["(no rows)"]
    return [line(table.header), line(["---"] * len(table.header))] + [line(r) for r in table.rows]


_CSS = """body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img{max-width:100%}figcaption{color:#555;font-size:90%}details{margin:0.5em 0}
summary{cursor:pointer}.kp-filters label{margin-right:1em}.kp-note{color:#555}"""


def render_html(doc: Document) -> str:
    esc = html_text
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{esc(doc.title)}</title><style>{_CSS}</style>{doc.head_html}</head><body>",
           f"<h1>{esc(doc.title)}</h1>"]
    out += _html_blocks(doc.blocks)
    out.append("</body></html>")
    return "\n".join(out)


def _html_blocks(blocks) -> list[str]:
    esc = html_text
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{html_inline(block.text)}</p>")
        elif isinstance(block, Lines):
            out.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in block.lines) + "</ul>")
        elif isinstance(block, Table):
            out.append(html_table(block))
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(block.caption)}">'
                       f"<figcaption>{esc(block.caption)}</figcaption></figure>")
        elif isinstance(block, Raw):
            out.append(block.html)
        elif isinstance(block, Details):
            out += [f"<details><summary>{esc(block.summary)}</summary>", *_html_blocks(block.blocks),
                    "</details>"]
    return out


def html_inline(text: str | list) -> str:
    """A Para's text: its strings escaped, its Code and Bold parts marked."""
    return "".join(_html_part(part) for part in _parts(text))


def _html_part(part) -> str:
    if isinstance(part, Code):
        return f"<code>{html_text(part.text)}</code>"
    if isinstance(part, Bold):
        return f"<b>{html_text(part.text)}</b>"
    return html_text(part)


def html_table(table: Table) -> str:
    if not table.rows:
        return "<p>(no rows)</p>"
    head = "".join(f"<th>{html_text(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


__all__ = ["Document", "Heading", "Para", "Code", "Bold", "Lines", "Table", "Image", "Raw", "Details",
           "render_markdown", "render_html", "html_table", "html_inline"]

"""Escaping for every place a string of a results store lands: HTML text and attributes,
plotly.js and matplotlib labels, data inside a ``<script>``, code inlined in a ``<script>``,
Markdown text, code and links.

A store's strings (error messages, op, backend, kernel, host names, ...) are data: they
come from plugins, other machines and other people, so none of them may become markup on
a page. The renderers (:mod:`kpbench.results.document`, :mod:`kpbench.results.interactive`,
:mod:`kpbench.results.compare_page`, :mod:`kpbench.results.plots`) escape through these
functions only.
"""
from __future__ import annotations

import html
import json
import re
import urllib.parse

# Inside <script>, the HTML parser ends the element at any "</script" (any case) and
# "<!--" followed by "<script" hides the real end tag: JSON never needs a raw '<', '>'
# or '&' (a string can say \u003c), and U+2028/U+2029 end a line in older JavaScript.
_SCRIPT_JSON = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                              "\u2028": "\\u2028", "\u2029": "\\u2029"})
# Markdown: punctuation that starts markup, escaped by a backslash (CommonMark allows that
# for any ASCII punctuation). '<' and '&' become entities where they could open a tag, a
# comment, an autolink or an entity; '<=' and 'a & b' read as they are.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*\[\]|~])")
_MARKDOWN_HTML = re.compile(r"<(?=[A-Za-z/!?])|&(?=[A-Za-z0-9#])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85\x0b\x0c]+")


def html_text(text: str) -> str:
    """Text for HTML content and quoted attribute values."""
    return html.escape(str(text), quote=True)


def plotly_text(text: str) -> str:
    """Text for a plotly.js label, legend name or hover text. Plotly reads a few HTML tags
    (<br>, <b>, <a href>, ...) and the entities &lt; &gt; &amp; and &#...; in them, but not
    &quot;: so quotes stay as they are (no tag can start without a '<')."""
    return html.escape(str(text), quote=False)


def figure_text(text) -> str:
    """Text for a matplotlib label, title or tick: a '$' would start mathtext, and a formula
    it cannot parse fails the whole figure."""
    return str(text).replace("$", r"\$")


def script_json(data) -> str:
    """``data`` as a JavaScript value to write between <script> and </script>."""
    return json.dumps(data, allow_nan=False, default=str).translate(_SCRIPT_JSON)


def script_code(js: str) -> str:
    """JavaScript source (plotly.js, ours) to inline between <script> and </script>: the two
    sequences the HTML parser acts on inside a script are broken with a backslash, which
    leaves a string, regular expression or comment meaning the same."""
    return re.sub(r"<(/script|!--)", lambda m: "<\\" + m.group(1), js, flags=re.IGNORECASE)


def markdown_text(text: str) -> str:
    """Text for a Markdown paragraph, list item, heading or table cell: one line, no markup."""
    text = _LINE_BREAKS.sub(" ", str(text))
    text = _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)
    return _MARKDOWN_HTML.sub(lambda m: "&lt;" if m.group() == "<" else "&amp;", text)


def markdown_code(text: str) -> str:
    """A Markdown code span showing ``text`` as it is (nothing inside a code span is markup;
    only a run of backticks as long as the fence could end it)."""
    text = _LINE_BREAKS.sub(" ", str(text))
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_link(path: str) -> str:
    """A relative path as a Markdown link destination (percent-encoded: no space, parenthesis
    or angle bracket can end it)."""
    return urllib.parse.quote(str(path), safe="/")


__all__ = ["html_text", "plotly_text", "figure_text", "script_json", "script_code", "markdown_text", "markdown_code",
           "markdown_link"]

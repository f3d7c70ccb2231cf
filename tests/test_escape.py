"""Each escaping function of kpbench.results.escape, output pinned character for character
(fast: the browser tests in test_hostile_pages.py show the same in Chromium, in minutes;
these are the tests scripts/mutation.sh holds escape.py to)."""
from __future__ import annotations

import json

import pytest

from kpbench.results import escape


def test_html_text_escapes_markup_and_both_quotes():
    assert escape.html_text("<b a=\"1\" c='2'>&") == "&lt;b a=&quot;1&quot; c=&#x27;2&#x27;&gt;&amp;"
    assert escape.html_text(3.5) == "3.5"


def test_plotly_text_escapes_markup_but_not_quotes():
    assert escape.plotly_text("<br>\"'&") == "&lt;br&gt;\"'&amp;"
    assert escape.plotly_text(None) == "None"


def test_figure_text_keeps_matplotlib_out_of_mathtext():
    assert escape.figure_text("$\\pwn$ a$b") == "\\$\\pwn\\$ a\\$b"
    assert escape.figure_text(7) == "7"


@pytest.mark.parametrize("payload", ["</SCRIPT><img src=x onerror=alert(1)>", "<!--<script>",
                                     "a\u2028b\u2029c", "&amp; <> &"])
def test_script_json_writes_none_of_the_characters_the_parser_acts_on_and_round_trips(payload):
    out = escape.script_json({"k": [payload, 1.5, None]})
    assert not any(c in out for c in "<>&\u2028\u2029")
    assert json.loads(out) == {"k": [payload, 1.5, None]}


def test_script_json_refuses_nan_and_writes_other_objects_as_strings():
    with pytest.raises(ValueError):
        escape.script_json([float("nan")])
    assert escape.script_json({"d": {1}}) == '{"d": "{1}"}'
    assert escape.script_json(object.__new__(type("T", (), {"__str__": lambda s: "<t>"}))) \
        == '"\\u003ct\\u003e"'


def test_script_code_breaks_the_end_tag_and_comment_opener_in_any_case():
    assert escape.script_code("a</script>b</SCRIPT x<!-- y") == "a<\\/script>b<\\/SCRIPT x<\\!-- y"
    assert escape.script_code("if (a < b) c <= d") == "if (a < b) c <= d"


def test_markdown_text_is_one_line_without_markup():
    assert escape.markdown_text("a|b*c_d`e[f]g~h\\i") == "a\\|b\\*c_d\\`e\\[f\\]g\\~h\\\\i"
    assert escape.markdown_text("x\r\ny\u2028z\x0bw") == "x y z w"
    assert escape.markdown_text("<img> </a> <!-- <?x &amp; &#1;") \
        == "&lt;img> &lt;/a> &lt;!-- &lt;?x &amp;amp; &amp;#1;"
    assert escape.markdown_text("N<=1e3 and a & b") == "N<=1e3 and a & b"


@pytest.mark.parametrize("text,expected", [
    ("plain", "`plain`"),
    ("a`b", "``a`b``"),
    ("a``b`", "``` a``b` ```"),
    (" lead", "`  lead `"),
    ("`tick", "`` `tick ``"),
    ("trail ", "` trail  `"),
    ("two\nlines", "`two lines`"),
])
def test_markdown_code_fences_longer_than_any_backtick_run(text, expected):
    assert escape.markdown_code(text) == expected


def test_markdown_link_percent_encodes_all_but_slashes():
    assert escape.markdown_link("fig dir/a (1)<x>.png") == "fig%20dir/a%20%281%29%3Cx%3E.png"

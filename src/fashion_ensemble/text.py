"""User data as text, never markup: class names, file names and labels come from a user's folder names, so wherever
they are shown (Markdown reports and cards, the OpenAPI description that ReDoc renders, plots) they are escaped here.
The web page itself never parses them: it sets them as DOM text (web/index.html)."""

from __future__ import annotations

import html
import json
import re

# Markdown characters that can start markup inside a line (emphasis, code, links, tables, strike-through, math on
# GitHub); `<`, `>` and `&` become HTML entities instead, so raw HTML cannot pass.
_MARKDOWN = re.compile(r"([\\`*_\[\]|~$])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def one_line(name: str) -> str:
    """`name` with newlines and other control characters shown as spaces: one line, whatever it holds."""
    return _CONTROL.sub(" ", str(name))


def terminal(line: str) -> str:
    """A line for the terminal with any control character in it written as an escape (`\\n`, `\\u001b`): a file
    named with a line break stays on its one line of `predict`'s output, and cannot send terminal escapes."""
    return json.dumps(line, ensure_ascii=False)[1:-1] if _CONTROL.search(line) else line


def markdown(name: str) -> str:
    """`name` as literal Markdown text, safe inside a sentence or a table cell: 'a|b' stays one cell, '<img ...>'
    shows as written, '$x^$' is not math."""
    return _MARKDOWN.sub(r"\\\1", html.escape(one_line(name), quote=False))


def plain(name: str) -> str:
    """`name` for a plot label (matplotlib): one line; mathtext is switched off where plots are drawn (report.py)."""
    return one_line(name)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet(cell: str) -> str:
    """`cell` for a CSV that a spreadsheet may open: one that would start a formula ('=HYPERLINK(...)', '+1', '@x')
    gets a leading apostrophe, OWASP's advice against CSV injection; anything else is left as it is."""
    cell = str(cell)
    return "'" + cell if cell.startswith(_FORMULA) else cell

"""MkDocs hook: Sphinx roles in docstrings (``:class:`TrainConfig```, ``:func:`~.driver.train```) read as plain
code in the API reference.

The docstrings use Markdown-compatible double backticks and, here and there, Sphinx cross-reference roles.
mkdocstrings renders a role as its literal name before the code span (``:class:TrainConfig``); this drops
the role name and, as Sphinx does, shows only the last dotted part of a ``~``-prefixed target.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):<code>([^<]*)</code>")


def _code(match: re.Match) -> str:
    target = match.group(1)
    if target.startswith("~"):
        target = target.lstrip("~").rsplit(".", 1)[-1]
    return f"<code>{target}</code>"


def on_page_content(html, page, config, files, **kwargs):
    if not page.file.src_uri.startswith("api/"):
        return html
    return _ROLE.sub(_code, html)

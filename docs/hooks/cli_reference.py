"""MkDocs hook: the command-line reference, generated at build time from ``fastweights.cli.build_parser()``.

``docs/cli.md`` holds the marker ``<!-- cli-reference -->``; it is replaced by one section per command
(sub-commands nested), each with its usage line and a table of its arguments: flag or name, value,
default, choices and help, read from the argparse actions themselves. The page therefore lists exactly
the flags the command line accepts, and a flag added there appears here on the next build.
"""

from __future__ import annotations

import argparse
import os
import sys

from mkdocs.exceptions import PluginError

MARKER = "<!-- cli-reference -->"
PAGE = "cli.md"
USAGE_WIDTH = 100


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE}: the marker {MARKER} is missing; the CLI reference goes there")
    return markdown.replace(MARKER, render(_build_parser(config)))


def _build_parser(config) -> argparse.ArgumentParser:
    root = os.path.dirname(os.path.abspath(config["docs_dir"]))
    if root not in sys.path:
        sys.path.insert(0, root)
    from fastweights.cli import build_parser

    return build_parser()


def render(parser: argparse.ArgumentParser) -> str:
    """The markdown reference of ``parser`` and all its sub-commands."""
    out: list[str] = []
    _render_parser(parser, parser.prog, None, 2, out)
    return "\n".join(out) + "\n"


def _render_parser(parser, prog, help_, level, out):
    heading = "#" * min(level, 6)
    out += [f"{heading} `{prog}`", ""]
    text = parser.description or help_
    if text:
        out += [_escape(text), ""]
    fmt = argparse.HelpFormatter(prog, width=USAGE_WIDTH)
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    out += ["```text", fmt.format_help().strip(), "```", ""]

    children = []
    untitled, titled = [], []  # argparse's own groups (positionals, options) share one table
    for group in parser._action_groups:
        rows = []
        for action in group._group_actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                sub_rows = [f"| [`{name}`](#{_anchor(f'{prog} {name}')}) | {_escape(helps.get(name) or '')} |"
                            for name in action.choices]
                out += ["| command | description |", "|---|---|", *sub_rows, ""]
                children += [(sub, f"{prog} {name}", helps.get(name)) for name, sub in action.choices.items()]
                continue
            rows.append(_row(action, prog))
        if not rows:
            continue
        if group.title in (None, "positional arguments", "options", "optional arguments"):
            untitled += rows
        else:
            titled.append((group, rows))
    header = ["| argument | default | description |", "|---|---|---|"]
    if untitled:
        out += [*header, *untitled, ""]
    for group, rows in titled:
        out += [f"**{_escape(group.title)}**", ""]
        if group.description:
            out += [_escape(group.description), ""]
        out += [*header, *rows, ""]
    for sub, sub_prog, sub_help in children:
        _render_parser(sub, sub_prog, sub_help, level + 1, out)


def _row(action, prog) -> str:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        value = _value(action)
        arg = f"`{names} {value}`" if value else f"`{names}`"
    else:
        arg = f"`{_value(action)}`"
    if action.required and action.option_strings:
        arg += " (required)"
    default = action.default
    if (default is None or default is argparse.SUPPRESS or isinstance(action, (argparse._StoreTrueAction,
                                                                              argparse._StoreFalseAction))):
        default_cell = ""
    else:
        if isinstance(default, (list, tuple)):
            default = ",".join(str(d) for d in default)
        default_cell = f"`{default}`"
    help_ = _expand_help(action, prog)
    if action.choices is not None and action.metavar is not None and not isinstance(action.choices, dict):
        help_ = (help_ + " " if help_ else "") + "(one of " + ", ".join(str(c) for c in action.choices) + ")"
    if action.nargs == "?" and action.option_strings and action.const is not None:
        help_ += f" (bare `{action.option_strings[-1]}`: {action.const})" if "bare" not in help_ else ""
    return f"| {arg} | {default_cell} | {_escape(help_)} |"


def _value(action) -> str:
    if action.nargs == 0:
        return ""
    metavar = _metavar(action)
    if action.nargs == "?":
        return f"[{metavar}]"
    if action.nargs == "*":
        return f"[{metavar} ...]"
    if action.nargs == "+":
        return f"{metavar} [{metavar} ...]"
    if isinstance(action.nargs, int) and action.nargs > 1:
        return " ".join([metavar] * action.nargs)
    return metavar


def _metavar(action) -> str:
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _expand_help(action, prog) -> str:
    if not action.help:
        return ""
    params = dict(vars(action), prog=prog)
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(str(c) for c in params["choices"])
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _escape(text: str) -> str:
    text = " ".join(str(text).split())
    for ch in "\\`*_[]|":
        text = text.replace(ch, "\\" + ch)
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _anchor(title: str) -> str:
    """The id Python-Markdown's toc extension gives the heading ``# `title` ``."""
    from markdown.extensions.toc import slugify

    return slugify(title, "-")

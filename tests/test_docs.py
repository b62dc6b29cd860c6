"""The documentation: ``mkdocs build --strict`` passes (every page, link, anchor, API reference and docstring
section resolves), the command-line reference lists every flag of the parser, and every relative link of the
README and of the pages under docs/ points at a file that exists. No network is needed."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TEST_COMMAND = ("python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[dev]' "
                "&& .venv/bin/python -m pytest -q")

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"""<(?:a|img)\s[^>]*?(?:href|src)=["']([^"']+)["']""")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
GENERATED = {DOCS / "cli.md"}  # its headings are written at build time (the strict build checks those anchors)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                    if line.startswith(("WARNING", "ERROR")) or "Error" in line or "Aborted" in line)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{log or proc.stderr[-4000:]}"
    return out


def test_strict_build_writes_every_page(site):
    assert (site / "index.html").is_file()
    for page in ("ops", "layers", "models", "tasks", "training", "rl", "benchmarks", "results",
                 "development", "cli"):
        assert (site / page / "index.html").is_file(), page
    for module in ("ops", "feature_maps", "layers", "models", "tasks", "train", "rl"):
        html = (site / "api" / module / "index.html").read_text(encoding="utf-8")
        assert "doc-heading" in html, f"the API reference of {module} is empty"
    for results in ("algorithmic", "atari", "wikitext103"):  # the write-ups under results/ are part of the site
        assert (site / "results" / results / "index.html").is_file(), results


def _walk(parser: argparse.ArgumentParser, prog: str):
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{prog} {name}")


def test_cli_reference_lists_every_command_and_flag(site):
    from fastweights.cli import build_parser

    html = (site / "cli" / "index.html").read_text(encoding="utf-8")
    commands = list(_walk(build_parser(), "fastweights"))
    assert len(commands) > 5
    for prog, parser in commands:
        assert f"<code>{prog}</code>" in html, f"{prog!r} missing from the CLI reference"
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in html, f"{prog} {flag} missing from the CLI reference"


def _relative_links(md: Path):
    text = _FENCE.sub("", md.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    for target in _LINK.findall(text) + _HTML_LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")):
            continue
        yield target


def _slugs(md: Path) -> set[str]:
    from markdown.extensions.toc import slugify

    text = _FENCE.sub("", md.read_text(encoding="utf-8"))
    return {slugify(re.sub(r"[`*_]", "", h).strip(), "-") for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


@pytest.mark.parametrize("md", [ROOT / "README.md", *sorted(DOCS.glob("**/*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(md):
    broken = []
    for target in _relative_links(md):
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve()
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and dest not in GENERATED and anchor not in _slugs(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{md.relative_to(ROOT)}: broken links {broken}"


def test_readme_keeps_the_ci_test_command():
    # .ci/run runs the first non-fence line after the marker, verbatim
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    i = lines.index("<!-- test-command -->")
    rest = [line for line in lines[i + 1:] if line.strip() and not line.startswith("```")]
    assert rest[0] == TEST_COMMAND


def test_docs_home_repeats_the_readme_setup_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set-up"):readme.index("## Five-minute start")]
    commands = re.findall(r"```bash\n(.+?)\n```", setup)
    assert len(commands) == 2
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    for command in commands:
        assert command in home, f"docs/index.md lacks the README's set-up command {command!r}"

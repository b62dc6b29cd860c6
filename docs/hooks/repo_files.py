"""MkDocs hook: the repository's ``results/`` folder is part of the site, where the docs link to it.

The pages under ``docs/`` link to the result write-ups as ``../results/algorithmic.md`` (a path that
works when the markdown is read in the repository). Here every file under ``results/`` joins the build
with exactly that source path (relative to ``docs/``), so MkDocs resolves and checks those links, and the
links inside the results pages (their figures), like any other: a missing file fails
``mkdocs build --strict``. In the built site they live under ``results/``. Nothing is copied into
``docs/``; the results stay where they are.
"""

from __future__ import annotations

import os
import posixpath

from mkdocs.structure.files import File, InclusionLevel

MOUNTED = ("results",)  # folders of the repository root, beside docs/
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}


def on_files(files, config, **kwargs):
    docs_dir = config["docs_dir"]
    root = os.path.dirname(os.path.abspath(docs_dir))
    for top in MOUNTED:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                src_uri = posixpath.join("..", rel)          # as a page under docs/ links to it
                dest_uri = _dest_uri(rel, config["use_directory_urls"])
                files.append(File(src_uri, docs_dir, config["site_dir"], config["use_directory_urls"],
                                  dest_uri=dest_uri, inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def _dest_uri(rel: str, use_directory_urls: bool) -> str:
    stem, ext = posixpath.splitext(rel)
    if ext != ".md":
        return rel
    if posixpath.basename(stem) in ("index", "README"):
        return posixpath.join(posixpath.dirname(stem), "index.html")
    return f"{stem}/index.html" if use_directory_urls else f"{stem}.html"

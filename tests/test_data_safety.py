"""Issue 20, the data: writers that refuse empty paths and never overwrite another data set, split files and
WikiText files checked (empty, malformed, non-UTF-8, outside the vocabulary) with one line naming the file
before training starts, the WikiText download verifying every file it extracts, and evaluation that never
writes to a cache directory a run's config.json names."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fastweights.tasks import load_splits, make_splits, write_splits
from fastweights.tasks import wikitext as wt

from .helpers import cli_in_process
from .test_lm import TINY_FLAGS, write_corpus

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-103"


def one_error(proc, *needles):
    errors = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("fastweights: error")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def files(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ 4. writers

def test_data_to_an_empty_path_or_over_another_data_set_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("train.txt").write_text("mine\n")
    before = files(tmp_path)
    one_error(cli_in_process(capsys, "data", "listops", "--depth", "2", "--sizes", "8,4,4", "--out", ""), "--out")
    one_error(cli_in_process(capsys, "data", "listops", "--depth", "2", "--sizes", "8,4,4", "--out", "."),
              "train.txt", "not overwritten")
    assert files(tmp_path) == before
    splits = make_splits("listops", sizes=(8, 4, 4), depth=2)
    with pytest.raises(ValueError, match="empty path"):
        write_splits("", splits)
    write_splits(tmp_path / "d", splits)
    written = files(tmp_path / "d")
    write_splits(tmp_path / "d", splits)  # the same data set again: nothing rewritten, no error
    with pytest.raises(ValueError, match="of another data set"):
        write_splits(tmp_path / "d", make_splits("listops", sizes=(8, 4, 4), depth=2, seed=1))
    assert files(tmp_path / "d") == written
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.md").write_text("x")
    write_splits(tmp_path / "other", splits)  # other files are no obstacle: none is overwritten
    assert (tmp_path / "other" / "notes.md").read_text() == "x"


def test_wikitext_download_target_refuses_empty_paths_and_other_files(tmp_path):
    with pytest.raises(wt.WikiTextError, match="empty path"):
        wt.download("", url="http://127.0.0.1:9/x.zip", timeout=1)
    d = tmp_path / "d"
    d.mkdir()
    (d / "wiki.train.tokens").write_text("mine\n")
    with pytest.raises(wt.WikiTextError, match="already holds wiki.train.tokens"):
        wt.download(d, url="http://127.0.0.1:9/x.zip", timeout=1)
    assert (d / "wiki.train.tokens").read_text() == "mine\n"


# ------------------------------------------------------------------------------------------ 7. split files

@pytest.mark.parametrize("damage,needle", [
    (lambda d: (d / "valid.txt").write_text(""), "valid.txt: the valid split is empty"),
    (lambda d: (d / "train.txt").write_bytes(b"[MAX 1 2 ]\t2\n[MIN \xff 3 ]\t3\n"), "train.txt:2: not UTF-8"),
    (lambda d: (d / "test.txt").write_text("[MAX 1 x ]\t2\n"), "test.txt:1: example token 'x'"),
    (lambda d: (d / "meta.json").write_text('{"task": "sorting"}'), "meta.json"),
])
def test_bad_split_files_are_one_line_naming_the_file_before_training(damage, needle, tmp_path, capsys):
    data = tmp_path / "data"
    write_splits(data, make_splits("listops", sizes=(16, 8, 8), depth=2))
    damage(data)
    with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
        load_splits(data)
    one_error(cli_in_process(capsys, "train", "listops", "--data", str(data), "--model", "lstm", "--d-model", "16",
                             "--layers", "1", "--batch-size", "8", "--steps", "2", "--out", str(tmp_path / "run")),
              needle)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ 7. WikiText files

@pytest.mark.parametrize("split,content,needle", [
    ("valid", b"", "wiki.valid.tokens: the valid file is empty"),
    ("train", b"", "wiki.train.tokens: the train file is empty"),
    ("test", b" the city .\n the \xfe river .\n", "wiki.test.tokens:2: not UTF-8"),
])
def test_bad_wikitext_files_are_one_line_naming_the_file_before_training(split, content, needle, tmp_path,
                                                                         capsys):
    data = write_corpus(tmp_path / "wt", train_lines=60)
    (data / wt.SPLIT_FILES[split]).write_bytes(content)
    with pytest.raises(wt.WikiTextError, match=needle):
        wt.load_corpus(data, cache_root=tmp_path / "cache")
    one_error(cli_in_process(capsys, "train", "lm", "--data", str(data), "--cache-dir", str(tmp_path / "cache"),
                             *TINY_FLAGS, "--steps", "4", "--out", str(tmp_path / "run")), needle)
    assert not (tmp_path / "run").exists() and not list((tmp_path / "cache").glob("*/*"))


def test_changed_data_is_refused_before_any_cache_is_written(tmp_path):
    data = write_corpus(tmp_path / "wt", train_lines=60)
    sums = {s: wt.sha256_file(data / name) for s, name in wt.SPLIT_FILES.items()}
    with open(data / "wiki.valid.tokens", "a") as f:
        f.write(" the city .\n")
    with pytest.raises(wt.WikiTextError, match="changed since this run started.*valid"):
        wt.load_corpus(data, cache_root=tmp_path / "cache", expected_sha256=sums)
    assert not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------------------------ 9. download, eval cache

def _archive(path: Path, sources: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, src in sources.items():
            z.write(src, f"wikitext-103/{name}")
    return path


def test_download_verifies_the_training_file_too(tmp_path):
    corpus = write_corpus(tmp_path / "c", train_lines=60)
    archive = _archive(tmp_path / "a.zip", {n: corpus / n for n in wt.SPLIT_FILES.values()})
    sums = {n: wt.sha256_file(corpus / n) for n in wt.SPLIT_FILES.values()}
    with pytest.raises(wt.WikiTextError, match="no checksum for wiki.train.tokens"):
        wt.download(tmp_path / "d", url=archive.as_uri(), expected_sha256={k: v for k, v in sums.items()
                                                                           if k != "wiki.train.tokens"})
    bad = dict(sums, **{"wiki.train.tokens": "0" * 64})
    with pytest.raises(wt.WikiTextError, match="wiki.train.tokens has SHA-256"):
        wt.download(tmp_path / "d", url=archive.as_uri(), expected_sha256=bad)
    assert not list((tmp_path / "d").iterdir())
    assert wt.download(tmp_path / "d", url=archive.as_uri(), expected_sha256=sums) == sums
    assert wt.download(tmp_path / "d", url="http://127.0.0.1:9/x.zip", expected_sha256=sums) == sums  # verified


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the shared WikiText-103 files")
def test_download_against_the_official_checksums_refuses_a_training_file_that_is_not_the_release(tmp_path):
    """The real validation and test files pass; a training file that is only the release's prefix does not."""
    archive = _archive(tmp_path / "a.zip", {"wiki.valid.tokens": SHARED / "wiki.valid.tokens",
                                            "wiki.test.tokens": SHARED / "wiki.test.tokens",
                                            "wiki.train.tokens": SHARED / "wiki.train.prefix.tokens"})
    with pytest.raises(wt.WikiTextError, match=f"wiki.train.tokens has SHA-1 .*expected {wt.OFFICIAL_TRAIN_SHA1}"):
        wt.download(tmp_path / "d", url=archive.as_uri())
    assert not list((tmp_path / "d").iterdir())
    digest, bad = wt._check_file(SHARED / "wiki.train.prefix.tokens",
                                 {"prefix_sha256": wt.OFFICIAL_TRAIN_PREFIX})  # the prefix check itself
    assert bad is None and digest == wt.OFFICIAL_TRAIN_PREFIX[1]


def test_eval_never_writes_to_a_cache_dir_named_by_config_json(tmp_path, capsys, monkeypatch):
    data = write_corpus(tmp_path / "wt", train_lines=60)
    run = tmp_path / "run"
    cli_in_process(capsys, "train", "lm", "--data", str(data), "--cache-dir", str(tmp_path / "train-cache"),
                   *TINY_FLAGS, "--steps", "4", "--eval-interval", "4", "--out", str(run), check=0)
    cfg = json.loads((run / "config.json").read_text())
    planted = tmp_path / "elsewhere"
    cfg["cache_dir"] = str(planted)
    (run / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("FASTWEIGHTS_CACHE", str(tmp_path / "user-cache"))
    cli_in_process(capsys, "eval", str(run), "--split", "valid", "--json", check=0)
    cli_in_process(capsys, "generate", str(run), "--tokens", "3", "--json", check=0)
    assert not planted.exists() and list((tmp_path / "user-cache" / "wikitext").iterdir())

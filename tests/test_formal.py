"""Formal languages: the generators against an independent membership checker, the data command and its errors,
and ``train formal`` end to end (tiny runs: train, resume, stop at accuracy, eval, learning parity).

The checker below is written apart from :mod:`fastweights.tasks.formal` (which runs counter automata): words
are recognised with regular expressions, block lengths and bracket rewriting (``()`` removed until none is
left), and a string starts a word ("viable") by a formula per language. The formulas are checked against brute
force (every string up to a length, kept where it is a word, all its prefixes collected), so the target sets
are checked exactly: by brute force for short prefixes, by the formulas for every prefix of generated words.
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

from fastweights.tasks import formal
from fastweights.tasks.formal import LANGUAGES, FormalDataError, language, make_formal_splits

from .helpers import cli_in_process, read_records

# ------------------------------------------------------------------------------------------ the checker


def _reduce(s: str, pair: str) -> str:
    """``s`` with every matched ``pair`` removed, repeatedly: what is left is closers, then openers."""
    while pair in s:
        s = s.replace(pair, "")
    return s


def _only(s: str, chars: str) -> str:
    return "".join(c for c in s if c in chars)


_BLOCKS = {"counter-2": re.compile(r"(a*)(b*)"), "counter-3": re.compile(r"(a*)(b*)(c*)")}


def member(lang: str, w: str) -> bool:
    """Whether ``w`` (one character per symbol) is a word of ``lang``."""
    if lang == "parity":
        return re.fullmatch(r"[01]*", w) is not None and w.count("1") % 2 == 0
    if lang == "aa-star":
        return re.fullmatch(r"(aa)*", w) is not None
    if lang == "abab-star":
        return re.fullmatch(r"(abab)*", w) is not None
    if lang in _BLOCKS:
        m = _BLOCKS[lang].fullmatch(w)
        return m is not None and len({len(g) for g in m.groups()}) == 1 and len(m.group(1)) > 0
    if lang == "dyck-1":
        return re.fullmatch(r"[()]*", w) is not None and _reduce(w, "()") == ""
    if lang == "shuffle-2":
        return (re.fullmatch(r"[()\[\]]*", w) is not None and _reduce(_only(w, "()"), "()") == ""
                and _reduce(_only(w, "[]"), "[]") == "")
    if lang == "reset-dyck":
        segments = w.split("r")
        return (re.fullmatch(r"[()r]*", w) is not None and all(")" not in _reduce(s, "()") for s in segments)
                and _reduce(segments[-1], "()") == "")
    raise KeyError(lang)


def viable(lang: str, q: str) -> bool:
    """Whether some word of ``lang`` starts with ``q``."""
    if lang == "parity":
        return re.fullmatch(r"[01]*", q) is not None
    if lang == "aa-star":
        return re.fullmatch(r"a*", q) is not None
    if lang == "abab-star":
        return re.fullmatch(r"(abab)*(a|ab|aba)?", q) is not None
    if lang in _BLOCKS:
        m = _BLOCKS[lang].fullmatch(q)
        if m is None:
            return False
        n, rest = len(m.group(1)), [len(g) for g in m.groups()[1:]]
        if not any(rest):
            return True
        last = max(i for i, r in enumerate(rest) if r)  # the blocks before the last begun one are full
        return n > 0 and all(r == n for r in rest[:last]) and rest[last] <= n
    if lang == "dyck-1":
        return re.fullmatch(r"[()]*", q) is not None and ")" not in _reduce(q, "()")
    if lang == "shuffle-2":
        return (re.fullmatch(r"[()\[\]]*", q) is not None and ")" not in _reduce(_only(q, "()"), "()")
                and "]" not in _reduce(_only(q, "[]"), "[]"))
    if lang == "reset-dyck":
        return re.fullmatch(r"[()r]*", q) is not None and all(")" not in _reduce(s, "()") for s in q.split("r"))
    raise KeyError(lang)


ALPHABETS = {"parity": "01", "aa-star": "a", "abab-star": "ab", "counter-2": "ab", "counter-3": "abc",
             "dyck-1": "()", "shuffle-2": "()[]", "reset-dyck": "()r"}
# brute force: every string up to N symbols; the strings up to M symbols are viable exactly when they start a
# word of at most N symbols (every viable string of M symbols can end within N here)
BRUTE = {"parity": (14, 7), "aa-star": (14, 7), "abab-star": (14, 7), "counter-2": (14, 6), "counter-3": (12, 3),
         "dyck-1": (14, 7), "shuffle-2": (8, 4), "reset-dyck": (10, 5)}


def target(lang: str, q: str) -> str:
    """The exact next-symbol set after ``q``, by the checker."""
    syms = [s for s in ALPHABETS[lang] if viable(lang, q + s)] + (["$"] if member(lang, q) else [])
    return "".join(sorted(syms))


def _strings(alphabet: str, upto: int):
    for n in range(upto + 1):
        for t in itertools.product(alphabet, repeat=n):
            yield "".join(t)


@pytest.fixture(scope="module")
def brute() -> dict:
    """Per language: the prefixes of every word of at most N symbols."""
    out = {}
    for lang, (n, _) in BRUTE.items():
        out[lang] = {w[:i] for w in _strings(ALPHABETS[lang], n) if member(lang, w) for i in range(len(w) + 1)}
    return out


@pytest.fixture(scope="module")
def default_splits() -> dict:
    """Every language's splits at the default lengths and sizes (seed 0)."""
    return {name: make_formal_splits(name) for name in LANGUAGES}


def test_checker_alphabets_are_the_languages():
    assert list(ALPHABETS) == list(LANGUAGES)
    for name, alphabet in ALPHABETS.items():
        assert "".join(language(name).alphabet) == alphabet


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_viable_formula_is_brute_force(lang, brute):
    n, m = BRUTE[lang]
    for q in _strings(ALPHABETS[lang], m):
        assert viable(lang, q) == (q in brute[lang]), (lang, q)


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_targets_of_short_prefixes_by_brute_force(lang, brute):
    """Every string of fewer than M symbols: the generator's target is the brute-force set (a string that starts
    no word is refused)."""
    lang_ = language(lang)
    _, m = BRUTE[lang]
    for q in _strings(ALPHABETS[lang], m - 1):
        if not q:
            continue
        if q not in brute[lang]:
            with pytest.raises(ValueError, match="does not start a word"):
                lang_.targets(tuple(q))
            continue
        want = "".join(sorted([s for s in ALPHABETS[lang] if q + s in brute[lang]] + ["$"] * member(lang, q)))
        assert lang_.targets(tuple(q))[-1] == want, (lang, q)
        assert lang_.is_word(tuple(q)) == member(lang, q)


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_generated_splits_are_words_with_exact_targets(lang, default_splits):
    """Every generated word is in its language; the targets of every prefix of 200 words per split are the
    checker's; sizes and length ranges are as asked; the long split covers every length of its range."""
    splits, lang_ = default_splits[lang], language(lang)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [10000, 2000, 2000]
    k = len(ALPHABETS[lang]) if lang_.by_n else 1
    for split, (lo, hi) in (("train", (1, 50)), ("valid", (1, 50)), ("test", (51, 100))):
        words = splits[split]
        for symbols, targets in words:
            w = "".join(symbols)
            assert member(lang, w), (lang, split, w)
            assert len(targets) == len(symbols) and lo * k <= len(w) <= hi * k
            assert "$" in targets[-1]
        for symbols, targets in words[:200]:
            w = "".join(symbols)
            assert list(targets) == [target(lang, w[:i]) for i in range(1, len(w) + 1)], (lang, split, w)
    long_lengths = {len(w) for w, _ in splits.test}
    assert long_lengths == {n * k for n in range(51, 101) if _has_word(lang, n * k)}


def _has_word(lang: str, length: int) -> bool:
    return any(len(w) == length and member(lang, w) for w in _words_of(lang, length))


def _words_of(lang: str, length: int):
    """Candidate words of about ``length`` (one of them is a word of exactly ``length`` where any is)."""
    if lang == "parity":
        return ["0" * length]
    if lang in ("aa-star",):
        return ["a" * length]
    if lang == "abab-star":
        return ["abab" * (length // 4)]
    if lang in _BLOCKS:
        n = length // len(ALPHABETS[lang])
        return ["".join(c * n for c in ALPHABETS[lang])]
    if lang in ("dyck-1", "shuffle-2"):
        return ["()" * (length // 2) + "(" * (length % 2)]
    return ["r" * length]


@pytest.mark.parametrize("lang", list(LANGUAGES))
def test_distinct_or_every_word_repeated(lang, default_splits):
    splits, meta = default_splits[lang], default_splits[lang].meta
    words = {s: ["".join(w) for w, _ in splits[s]] for s in ("train", "valid", "test")}
    if lang in ("aa-star", "abab-star", "counter-2", "counter-3"):
        assert meta["repeated"] and "train and valid coincide" in meta["note"]
        k = len(ALPHABETS[lang]) if lang.startswith("counter") else 1
        every = {w for n in range(1, 51) for w in _words_of(lang, n * k) if len(w) == n * k and member(lang, w)}
        assert set(words["train"]) == set(words["valid"]) == every
        counts = {w: words["train"].count(w) for w in every}
        assert max(counts.values()) - min(counts.values()) <= 1  # repeated evenly up to the size
        assert not set(words["test"]) & every
    else:
        assert not meta["repeated"] and "note" not in meta
        for s in words:
            assert len(set(words[s])) == len(words[s]), f"{lang} {s} has repeats"
        assert not set(words["train"]) & set(words["valid"])
        assert not (set(words["train"]) | set(words["valid"])) & set(words["test"])


def test_deterministic_for_a_seed():
    a = make_formal_splits("dyck-1", sizes=(50, 10, 10), seed=3)
    b = make_formal_splits("dyck-1", sizes=(50, 10, 10), seed=3)
    c = make_formal_splits("dyck-1", sizes=(50, 10, 10), seed=4)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    assert a.train != c.train


def test_the_issue_examples():
    assert language("counter-2").targets(tuple("aab")) == ["ab", "ab", "b"]
    assert language("dyck-1").targets(tuple("()")) == ["()", "$("]
    assert language("reset-dyck").targets(tuple("(r")) == ["()r", "$(r"]
    assert language("counter-3").targets(tuple("abc")) == ["ab", "c", "$"]


def test_small_ranges_are_enumerated_without_repeats():
    """Where a length has few words they are dealt without drawing any twice: parity of lengths 1-4 has 15 words,
    and asking for all of them gives each once."""
    s = make_formal_splits("parity", lengths=(1, 4), test_lengths=(5, 5), sizes=(10, 5, 16))
    short = sorted("".join(w) for w, _ in s.train + s.valid)
    assert short == sorted(w for w in _strings("01", 4) if w and member("parity", w))
    assert len({w for w, _ in s.test}) == 16


@pytest.mark.parametrize("kwargs, field, text", [
    ({"name": "nope"}, "language", "unknown language 'nope'"),
    ({"name": "abab-star", "lengths": (1, 3)}, "lengths", "has no word of lengths 1-3"),
    ({"name": "counter-2", "test_lengths": (1, 3)}, "test_lengths", "overlaps"),
    ({"name": "dyck-1", "lengths": (1, 6), "sizes": (100, 10, 10)}, "sizes", "has 8 words of lengths 1-6"),
    ({"name": "parity", "test_lengths": (51, 52), "lengths": (1, 12), "sizes": (10**4, 10**4, 5)}, "sizes",
     "fewer than the 20000"),
    ({"name": "parity", "lengths": (0, 5)}, "lengths", "1 <= MIN <= MAX"),
    ({"name": "parity", "sizes": (0, 1, 1)}, "sizes", "each split must hold"),
])
def test_impossible_requests_name_the_option(kwargs, field, text):
    with pytest.raises(FormalDataError, match=re.escape(text)) as e:
        make_formal_splits(**kwargs)
    assert e.value.field == field and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ the data command

def test_data_formal_writes_the_files(tmp_path, capsys):
    out = tmp_path / "d"
    cli_in_process(capsys, "data", "formal", "--language", "counter-2", "--out", out, "--sizes", "60,20,20",
                   check=0)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.txt", "train.txt", "valid.txt"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["language"] == "counter-2" and meta["repeated"] and "coincide" in meta["note"]
    line = (out / "train.txt").read_text().splitlines()[0]
    symbols, targets = line.split("\t")
    n = symbols.count("a")
    assert symbols == " ".join("a" * n + "b" * n)
    assert targets.split() == ["ab"] * n + ["b"] * (n - 1) + ["$"]
    back = formal.load_formal_splits(out)
    assert (back.train, back.valid, back.test) == tuple(
        [tuple(map(tuple, ex)) for ex in make_formal_splits("counter-2", sizes=(60, 20, 20))[s]]
        for s in ("train", "valid", "test"))
    # the same data set again is left as it is; another one is refused
    cli_in_process(capsys, "data", "formal", "--language", "counter-2", "--out", out, "--sizes", "60,20,20",
                   check=0)
    r = cli_in_process(capsys, "data", "formal", "--language", "dyck-1", "--out", out, "--sizes", "60,20,20",
                       check=2)
    assert r.stderr.startswith("fastweights: error: --out ") and "another data set" in r.stderr


def test_dyck_file_line(tmp_path, capsys):
    out = tmp_path / "d"
    cli_in_process(capsys, "data", "formal", "--language", "dyck-1", "--out", out, "--sizes", "30,10,10",
                   "--lengths", "2,2", "--test-lengths", "4,8", "--sizes", "1,0,1", check=2)
    cli_in_process(capsys, "data", "formal", "--language", "dyck-1", "--out", out, "--lengths", "1,2",
                   "--test-lengths", "4,8", "--sizes", "1,0,1", check=2)
    cli_in_process(capsys, "data", "formal", "--language", "dyck-1", "--out", out, "--lengths", "1,3",
                   "--test-lengths", "4,8", "--sizes", "1,1,5", check=2)  # one word of lengths 1-3, two asked for
    cli_in_process(capsys, "data", "formal", "--language", "dyck-1", "--out", out, "--lengths", "1,4",
                   "--test-lengths", "5,8", "--sizes", "2,1,5", check=0)
    lines = sorted((out / "train.txt").read_text().splitlines() + (out / "valid.txt").read_text().splitlines())
    assert lines == ["( ( ) )\t() () () $(", "( )\t() $(", "( ) ( )\t() $( () $("]


@pytest.mark.parametrize("args, start", [
    (["--language", "nope"], "--language: unknown language 'nope'"),
    (["--language", "abab-star", "--lengths", "1,3"], "--lengths: abab-star has no word of lengths 1-3"),
    (["--language", "parity", "--lengths", "5,2"], "--lengths: MIN must not be above MAX"),
    (["--language", "parity", "--lengths", "1,5000"], "--lengths: must be an integer >= 1 and <= 1000"),
    (["--language", "parity", "--test-lengths", "40,60"], "--test-lengths: 40,60 overlaps"),
    (["--language", "dyck-1", "--lengths", "1,6", "--sizes", "100,10,10"], "--sizes: dyck-1 has 8 words"),
    (["--language", "parity", "--sizes", "0,1,1"], "--sizes: must be an integer >= 1"),
    (["--language", "parity", "--sizes", "1,1"], "--sizes: expected 3 comma-separated numbers"),
])
def test_data_formal_errors_are_one_line(tmp_path, capsys, args, start):
    out = tmp_path / "d"
    r = cli_in_process(capsys, "data", "formal", *args, "--out", out, check=2)
    assert r.stderr.startswith("fastweights: error: " + start), r.stderr
    assert r.stderr.count("\n") == 1 and not out.exists()


# ------------------------------------------------------------------------------------------ training

TINY = ["--language", "parity", "--lengths", "1,7", "--test-lengths", "8,10", "--sizes", "48,16,16",
        "--d-model", "16", "--heads", "2", "--layers", "1", "--batch-size", "8", "--threads", "1",
        "--log-interval", "1", "--eval-batch-size", "16"]


def test_train_formal_resume_and_eval(tmp_path, capsys):
    """A tiny run, and the same run cut in two by --resume: the same train losses; eval on both splits."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cli_in_process(capsys, "train", "formal", *TINY, "--model", "lstm", "--steps", "6", "--eval-interval", "3",
                   "--out", whole, check=0)
    cli_in_process(capsys, "train", "formal", *TINY, "--model", "lstm", "--steps", "3", "--eval-interval", "3",
                   "--out", cut, check=0)
    cli_in_process(capsys, "train", "formal", "--resume", "--out", cut, "--steps", "6", check=0)
    losses = [[r["loss"] for r in read_records(run, "train")] for run in (whole, cut)]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
    valid = read_records(whole, "valid")
    assert [r["step"] for r in valid] == [3, 6] and {"acc", "pos_acc", "long_acc", "long_loss"} <= set(valid[0])
    config = json.loads((whole / "config.json").read_text())
    assert config["kind"] == "formal" and config["task"] == "formal" and config["dropout"] == 0.0
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["stopped"] is None and summary["step"] == 6
    from fastweights.train.formal import evaluate_formal_run
    from fastweights.train.runs import evaluate

    test = evaluate(whole, split="test", which="last")
    assert test["examples"] == 16 and (test["min_length"], test["max_length"]) == (8, 10)
    assert test["acc"] == pytest.approx(valid[-1]["long_acc"]) and test["loss"] == pytest.approx(valid[-1]["long_loss"])
    assert evaluate_formal_run(whole, "test", "last", cache=True) == {**test, "checkpoint": "last"}
    best = evaluate_formal_run(whole, "valid")
    assert best["step"] == summary["best_step"]


def test_train_formal_stops_at_accuracy(tmp_path, capsys):
    run = tmp_path / "run"
    r = cli_in_process(capsys, "train", "formal", *TINY, "--model", "rdn", "--steps", "20", "--eval-interval",
                       "2", "--stop-at-accuracy", "0", "--out", run, check=0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "accuracy 0 reached" and summary["step"] == 2 and summary["status"] == "completed"
    assert "accuracy 0 reached at step 2 of 20: stopping" in r.stderr
    assert [rec["step"] for rec in read_records(run, "train")] == [1, 2]  # each step recorded once


@pytest.mark.parametrize("args, start", [
    (["--language", "nope"], "--language: language must be one of"),
    (["--language", "abab-star", "--lengths", "1,3"], "--lengths: abab-star has no word of lengths 1-3"),
    (["--language", "dyck-1", "--lengths", "1,6", "--sizes", "100,10,10"], "--sizes: dyck-1 has 8 words"),
    (["--stop-at-accuracy", "1.5"], "--stop-at-accuracy: stop_at_accuracy must be a finite number >= 0 and <= 1"),
    (["--batch-size", "100", "--sizes", "50,10,10"], "--batch-size: batch_size (100) is larger than the training"),
])
def test_train_formal_bad_flags(tmp_path, capsys, args, start):
    r = cli_in_process(capsys, "train", "formal", *args, "--steps", "1", "--out", tmp_path / "run", check=2)
    assert r.stderr.startswith("fastweights: error: " + start), r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_train_formal_from_a_data_directory(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    cli_in_process(capsys, "data", "formal", "--language", "dyck-1", "--out", data, "--lengths", "1,10",
                   "--test-lengths", "11,14", "--sizes", "24,8,8", check=0)
    r = cli_in_process(capsys, "train", "formal", "--data", data, "--steps", "1", "--out", run, check=2)
    assert "holds 'dyck-1' words, not 'parity' (give --language dyck-1)" in r.stderr
    cli_in_process(capsys, "train", "formal", "--data", data, "--language", "dyck-1", "--steps", "2",
                   "--batch-size", "8", "--d-model", "16", "--heads", "2", "--layers", "1", "--model", "lt",
                   "--out", run, check=0)
    config = json.loads((run / "config.json").read_text())
    assert (config["lengths"], config["test_lengths"], config["sizes"]) == ([1, 10], [11, 14], [24, 8, 8])
    assert (run / "data" / "train.txt").read_text() == (data / "train.txt").read_text()


def test_parity_is_learned_by_a_recurrent_model(tmp_path, capsys):
    """A small LSTM learns parity of strings up to 10 symbols and gets it right on 11-16 symbols (the run stops at
    100% on both), within a few hundred steps."""
    run = tmp_path / "run"
    cli_in_process(capsys, "train", "formal", "--language", "parity", "--lengths", "1,10", "--test-lengths", "11,16",
                   "--sizes", "256,64,64", "--model", "lstm", "--d-model", "16", "--heads", "2", "--layers", "1",
                   "--lr", "1e-2", "--batch-size", "16", "--steps", "400", "--eval-interval", "25",
                   "--threads", "1", "--out", run, check=0)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"] == "accuracy 1 reached", summary
    assert summary["best_valid"]["long_acc"] == 1.0

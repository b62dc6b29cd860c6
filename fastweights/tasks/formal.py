"""Formal-language recognition as next-symbol-set prediction (Bhattamishra, Ahuja and Goyal, 2020; the data of
Irie, Csordás and Schmidhuber, EMNLP 2023).

The eight languages (:data:`LANGUAGES`):

| name | alphabet | words |
|---|---|---|
| ``parity`` | 0 1 | an even number of 1s |
| ``aa-star`` | a | (aa)*: even length |
| ``abab-star`` | a b | (abab)* |
| ``counter-2`` | a b | aⁿbⁿ, n >= 1 |
| ``counter-3`` | a b c | aⁿbⁿcⁿ, n >= 1 |
| ``dyck-1`` | ( ) | balanced brackets |
| ``shuffle-2`` | ( ) [ ] | each bracket type balanced on its own (the shuffle of two Dyck-1 languages) |
| ``reset-dyck`` | ( ) r | ``r`` resets the bracket count to zero; within each segment the count never goes below \
zero, and the last segment ends at zero |

The task. After each prefix ``w[:i+1]`` of a word ``w`` the target is the exact set of symbols that can follow it
in some word of the language, with ``$`` when the prefix is itself a word; a target is written as its set's
symbols sorted by code point and joined (after ``a a b`` in counter-2: ``b``; after ``( )`` in dyck-1: ``$(``).

How the words are made. Each language is a deterministic automaton with counters (:class:`Language`: a start
state, ``step(state, symbol)`` giving the next state or None where no word goes on that way, and ``accepts``).
Every state ``step`` returns can still reach a word, so a prefix's target set is the symbols ``step`` takes plus
``$`` where the state accepts. The number of words of each length from each state is counted exactly (Python
integers), which gives uniform samples of the words of one length and the enumeration of short lengths.

Splits (:func:`make_formal_splits`). Train and valid take words of lengths 1-50, test of lengths 51-100 (for
counter-2 and counter-3 the ranges count n, so test words have 102-200 and 153-300 symbols). Sizes 10,000 /
2,000 / 2,000. Within a split the lengths are dealt round-robin in a seeded random order over every length of
the range that has words (a length whose words run out drops out), so every length of the long range is
covered; within a length a word is drawn uniformly. Words are distinct within and across splits; the test
split is filled first, then valid, then train. The languages with at most one word per length or per n
(aa-star, abab-star, counter-2, counter-3: :attr:`Language.few`) have fewer words in a range than a split
holds: there every split holds every word of its range, repeated up to its size, and train and valid coincide
(``meta.json`` says so). Everything is deterministic for a seed.

Files (:func:`write_formal_splits`, ``fastweights data formal``): ``train.txt``, ``valid.txt``, ``test.txt``,
one word per line, its symbols separated by spaces, a TAB, then its targets separated by spaces
(``( ( )<TAB>() () (``), plus ``meta.json`` (``task: "formal"``, the language, the options, sizes, seed, and
``repeated``/``note`` for the four small languages). The conventions (refusals, atomic writes) are those of
:func:`fastweights.tasks.splits.write_splits`.
"""

from __future__ import annotations

import bisect
import json
import os
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .splits import SPLIT_FILES, SPLITS, Splits, Vocab, _same_text, _write_atomic, read_lines

END = "$"
DEFAULT_LENGTHS = (1, 50)
DEFAULT_TEST_LENGTHS = (51, 100)
DEFAULT_SIZES = (10000, 2000, 2000)
MAX_LENGTH = 1000  # the longest word (or the largest n) a range may ask for
MAX_SIZE = 10**6
ENUMERATE_BELOW = 4096  # a length with at most this many words is enumerated (then dealt without repeats)
FORMAT_VERSION = 1
FORMAT = ("one word per line: its symbols separated by spaces, TAB, the target of each prefix separated by spaces "
          "(the symbols that can follow it in some word, with $ when the prefix is a word, sorted and joined)")


class FormalDataError(ValueError):
    """A request the language cannot meet; ``field`` names the option at fault (``language``, ``lengths``,
    ``test_lengths``, ``sizes``)."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name

    @property
    def detail(self) -> str:
        """The message without its leading ``FIELD: ``."""
        text = str(self)
        return text[len(self.field) + 2:] if text.startswith(self.field + ": ") else text


# ------------------------------------------------------------------------------------------ the languages

@dataclass(frozen=True)
class Language:
    """A language as a deterministic automaton with counters.

    ``step(state, symbol)``: the state after reading ``symbol``, or None where no word of the language starts
    with the prefix read so far followed by ``symbol``; every state it returns can still reach a word.
    ``need(state)`` and ``most(state)``: lower and upper bounds (None: unbounded) on the symbols still to read
    before a word can end; they only prune the counting.
    ``by_n``: length ranges count n (a word has ``len(alphabet) * n`` symbols), not symbols.
    ``few``: at most one word per length (or per n): splits hold every word of their range, repeated."""

    name: str
    alphabet: tuple
    start: Hashable
    step: Callable
    accepts: Callable
    need: Callable = lambda state: 0
    most: Callable = lambda state: None
    by_n: bool = False
    few: bool = False
    words: str = ""
    _counts: dict = field(default_factory=dict, compare=False, repr=False)
    _sets: dict = field(default_factory=dict, compare=False, repr=False)
    _ways: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def classes(self) -> tuple:
        """The output classes, in the order of the model's outputs: the alphabet, then ``$``."""
        return (*self.alphabet, END)

    # -- reading
    def run(self, word: Sequence[str]):
        """The state after ``word`` (None if no word of the language starts with it)."""
        state = self.start
        for sym in word:
            if sym not in self.alphabet:
                return None
            state = self.step(state, sym)
            if state is None:
                return None
        return state

    def is_word(self, word: Sequence[str]) -> bool:
        state = self.run(word)
        return state is not None and bool(self.accepts(state))

    def next_set(self, state) -> str:
        """The target of the prefix that led to ``state``: the symbols that can follow, and ``$`` if it is a
        word, sorted and joined."""
        found = self._sets.get(state)
        if found is None:
            syms = [s for s in self.alphabet if self.step(state, s) is not None]
            if self.accepts(state):
                syms.append(END)
            found = self._sets[state] = "".join(sorted(syms))
        return found

    def targets(self, word: Sequence[str]) -> list[str]:
        """The target after each prefix ``word[:1]``, ..., ``word`` (``ValueError`` if ``word`` is not a prefix
        of a word of the language)."""
        out, state = [], self.start
        for i, sym in enumerate(word):
            state = self.step(state, sym) if sym in self.alphabet else None
            if state is None:
                raise ValueError(f"{' '.join(word[:i + 1])!r} does not start a word of {self.name}")
            out.append(self.next_set(state))
        return out

    # -- counting
    def word_length(self, n: int) -> int:
        """The length of a word in a range entry ``n`` (the symbols, or ``len(alphabet) * n`` for ``by_n``)."""
        return n * len(self.alphabet) if self.by_n else n

    def count(self, length: int, state=None) -> int:
        """The number of ways to go on from ``state`` (default: the start) to a word in exactly ``length`` more
        symbols."""
        state = self.start if state is None else state
        memo = self._counts
        key = (state, length)
        if key in memo:
            return memo[key]
        stack = [key]
        while stack:  # iterative: lengths may be deeper than Python's recursion limit
            s, r = stack[-1]
            if (s, r) in memo:
                stack.pop()
                continue
            most = self.most(s)
            if self.need(s) > r or (most is not None and r > most):
                memo[(s, r)] = 0
                stack.pop()
                continue
            if r == 0:
                memo[(s, r)] = int(bool(self.accepts(s)))
                stack.pop()
                continue
            children = [(c, r - 1) for c in (self.step(s, a) for a in self.alphabet) if c is not None]
            missing = [c for c in children if c not in memo]
            if missing:
                stack.extend(missing)
                continue
            memo[(s, r)] = sum(memo[c] for c in children)
            stack.pop()
        return memo[key]

    def sample(self, length: int, rng: random.Random) -> tuple:
        """A word of exactly ``length`` symbols, uniform over all of them (``ValueError`` if there is none)."""
        if self.count(length) == 0:
            raise ValueError(f"{self.name} has no word of length {length}")
        state, word = self.start, []
        for r in range(length - 1, -1, -1):
            symbols, children, bounds = self._choices(state, r)
            i = bisect.bisect_right(bounds, rng.randrange(bounds[-1]))
            word.append(symbols[i])
            state = children[i]
        return tuple(word)

    def _choices(self, state, r: int):
        """The symbols that lead from ``state`` to a word in ``r + 1`` more symbols, their states, and the
        running totals of their counts (kept: sampling asks again and again)."""
        found = self._ways.get((state, r))
        if found is None:
            symbols, children, bounds, total = [], [], [], 0
            for a in self.alphabet:
                c = self.step(state, a)
                n = self.count(r, c) if c is not None else 0
                if n:
                    total += n
                    symbols.append(a)
                    children.append(c)
                    bounds.append(total)
            found = self._ways[(state, r)] = (symbols, children, bounds)
        return found

    def enumerate(self, length: int) -> list[tuple]:
        """Every word of exactly ``length`` symbols, in the order of the alphabet."""
        out: list[tuple] = []
        stack = [(self.start, ())]
        while stack:
            state, prefix = stack.pop()
            r = length - len(prefix)
            if r == 0:
                out.append(prefix)
                continue
            for a in reversed(self.alphabet):
                c = self.step(state, a)
                if c is not None and self.count(r - 1, c):
                    stack.append((c, prefix + (a,)))
        return out


def _bracket(depth: int, sym: str, open_: str, close: str):
    if sym == open_:
        return depth + 1
    if sym == close:
        return depth - 1 if depth > 0 else None
    return None


def _counter(letters: str):
    """aⁿbⁿ(cⁿ): the state is (letter being read, n, how many of it are read); n is fixed by the a's."""
    k = len(letters)

    def step(state, sym):
        phase, n, m = state
        if phase == 0 and sym == letters[0]:
            return (0, n + 1, n + 1)
        if phase == 0 and n >= 1 and sym == letters[1]:
            return (1, n, 1)
        if phase >= 1 and m < n and sym == letters[phase]:
            return (phase, n, m + 1)
        if phase >= 1 and m == n and phase + 1 < k and sym == letters[phase + 1]:
            return (phase + 1, n, 1)
        return None

    def accepts(state):
        phase, n, m = state
        return phase == k - 1 and m == n and n >= 1

    def need(state):
        phase, n, m = state
        if phase == 0:
            return max(n, 1) * (k - 1) + (0 if n else 1)
        return (n - m) + (k - 1 - phase) * n

    def most(state):
        return None if state[0] == 0 else need(state)  # once the a's are read, the rest is fixed

    return step, accepts, need, most


def _shuffle2(state, sym):
    d1, d2 = state
    if sym in "()":
        d = _bracket(d1, sym, "(", ")")
        return None if d is None else (d, d2)
    d = _bracket(d2, sym, "[", "]")
    return None if d is None else (d1, d)


def _reset_dyck(depth, sym):
    return 0 if sym == "r" else _bracket(depth, sym, "(", ")")


def _abab(pos, sym):
    return (pos + 1) % 4 if sym == "ab"[pos % 2] else None


_c2 = _counter("ab")
_c3 = _counter("abc")

LANGUAGES: dict[str, Language] = {lang.name: lang for lang in (
    Language("parity", ("0", "1"), 0, lambda s, a: s ^ (a == "1"), lambda s: s == 0,
             words="an even number of 1s"),
    Language("aa-star", ("a",), 0, lambda s, a: 1 - s, lambda s: s == 0, need=lambda s: s, few=True,
             words="(aa)*: even length"),
    Language("abab-star", ("a", "b"), 0, _abab, lambda s: s == 0, need=lambda s: (4 - s) % 4, few=True,
             words="(abab)*"),
    Language("counter-2", ("a", "b"), (0, 0, 0), _c2[0], _c2[1], need=_c2[2], most=_c2[3], by_n=True, few=True,
             words="a^n b^n, n >= 1"),
    Language("counter-3", ("a", "b", "c"), (0, 0, 0), _c3[0], _c3[1], need=_c3[2], most=_c3[3], by_n=True, few=True,
             words="a^n b^n c^n, n >= 1"),
    Language("dyck-1", ("(", ")"), 0, lambda s, a: _bracket(s, a, "(", ")"), lambda s: s == 0,
             need=lambda s: s, words="balanced brackets"),
    Language("shuffle-2", ("(", ")", "[", "]"), (0, 0), _shuffle2, lambda s: s == (0, 0),
             need=lambda s: s[0] + s[1], words="each of () and [] balanced on its own"),
    Language("reset-dyck", ("(", ")", "r"), 0, _reset_dyck, lambda s: s == 0, need=lambda s: s,
             words="r resets the bracket count; each segment never below zero, the last one ends at zero"),
)}


def language(name: str) -> Language:
    """The language called ``name`` (a one-line :class:`FormalDataError` naming ``language`` otherwise)."""
    if name not in LANGUAGES:
        raise FormalDataError("language", f"language: unknown language {name!r}; known: {', '.join(LANGUAGES)}")
    return LANGUAGES[name]


def vocab(name: str) -> Vocab:
    """The input vocabulary of a language: the pad (id 0), then its alphabet."""
    return Vocab(language(name).alphabet)


# ------------------------------------------------------------------------------------------ the splits

def _range_text(lang: Language, lo: int, hi: int) -> str:
    return f"n = {lo}-{hi}" if lang.by_n else f"lengths {lo}-{hi}"


def _check_range(lang: Language, rng_: Sequence[int], name: str) -> list[int]:
    """The word lengths of a range (those with words), or a :class:`FormalDataError` naming ``name``."""
    try:
        lo, hi = (int(x) for x in rng_)
    except (TypeError, ValueError):
        raise FormalDataError(name, f"{name}: expected MIN,MAX, got {rng_!r}") from None
    if not 1 <= lo <= hi <= MAX_LENGTH:
        raise FormalDataError(name, f"{name}: expected 1 <= MIN <= MAX <= {MAX_LENGTH}, got {lo},{hi}")
    lengths = [lang.word_length(n) for n in range(lo, hi + 1) if lang.count(lang.word_length(n))]
    if not lengths:
        raise FormalDataError(name, f"{name}: {lang.name} has no word of {_range_text(lang, lo, hi)}")
    return lengths


def check_request(name: str, lengths=DEFAULT_LENGTHS, test_lengths=DEFAULT_TEST_LENGTHS,
                  sizes=DEFAULT_SIZES) -> dict:
    """Checks that the language has the words a request asks for (a one-line :class:`FormalDataError` naming the
    option otherwise): ranges within ``1..MAX_LENGTH`` with words, not overlapping, positive sizes, and for
    the languages whose words must be distinct, enough of them. Returns the word lengths of both ranges."""
    lang = language(name)
    short = _check_range(lang, lengths, "lengths")
    long = _check_range(lang, test_lengths, "test_lengths")
    if not (lengths[1] < test_lengths[0] or test_lengths[1] < lengths[0]):
        raise FormalDataError("test_lengths", f"test_lengths: {test_lengths[0]},{test_lengths[1]} overlaps the "
                                              f"train/valid range {lengths[0]},{lengths[1]}; the splits must not "
                                              f"share words")
    try:
        train, valid, test = (int(s) for s in sizes)
    except (TypeError, ValueError):
        raise FormalDataError("sizes", f"sizes: expected TRAIN,VALID,TEST, got {sizes!r}") from None
    if min(train, valid, test) < 1 or max(train, valid, test) > MAX_SIZE:
        raise FormalDataError("sizes", f"sizes: each split must hold 1..{MAX_SIZE} words, got {train},{valid},{test}")
    if not lang.few:
        n_short, n_long = sum(lang.count(L) for L in short), sum(lang.count(L) for L in long)
        if n_short < train + valid:
            raise FormalDataError("sizes", f"sizes: {lang.name} has {n_short} words of "
                                           f"{_range_text(lang, *lengths)}, fewer than the {train + valid} distinct "
                                           f"train and valid words asked for")
        if n_long < test:
            raise FormalDataError("sizes", f"sizes: {lang.name} has {n_long} words of "
                                           f"{_range_text(lang, *test_lengths)}, fewer than the {test} distinct "
                                           f"test words asked for")
    return {"short": short, "long": long}


class _Dealer:
    """Deals distinct words of given lengths: enumerated and shuffled where a length has few words, sampled
    uniformly (repeats drawn again) otherwise."""

    def __init__(self, lang: Language, rng: random.Random):
        self.lang, self.rng = lang, rng
        self.seen: set = set()
        self.used: dict = {}
        self.pools: dict = {}

    def left(self, length: int) -> int:
        return self.lang.count(length) - self.used.get(length, 0)

    def draw(self, length: int) -> tuple:
        self.used[length] = self.used.get(length, 0) + 1
        if self.lang.count(length) <= ENUMERATE_BELOW:
            if length not in self.pools:
                pool = self.lang.enumerate(length)
                self.rng.shuffle(pool)
                self.pools[length] = pool
            word = self.pools[length].pop()
        else:
            word = self.lang.sample(length, self.rng)
            while word in self.seen:
                word = self.lang.sample(length, self.rng)
        self.seen.add(word)
        return word

    def deal(self, lengths: list[int], size: int) -> list[tuple]:
        out: list[tuple] = []
        while len(out) < size:
            order = [L for L in lengths if self.left(L) > 0]
            self.rng.shuffle(order)
            for L in order[:size - len(out)]:
                out.append(self.draw(L))
        return out


def _repeated(lang: Language, lengths: list[int], size: int, rng: random.Random) -> list[tuple]:
    """Every word of ``lengths``, repeated up to ``size`` (the remainder a seeded choice of distinct words)."""
    words = [w for L in lengths for w in lang.enumerate(L)]
    out = words * (size // len(words)) + rng.sample(words, size % len(words))
    rng.shuffle(out)
    return out


def make_formal_splits(name: str, lengths=DEFAULT_LENGTHS, test_lengths=DEFAULT_TEST_LENGTHS,
                       sizes=DEFAULT_SIZES, seed: int = 0) -> Splits:
    """Train / valid / test splits of language ``name`` (see the module doc). Each example is
    ``(symbols, targets)``, two tuples of strings of the same length. ``lengths`` and ``test_lengths`` are
    ``(MIN, MAX)`` word lengths, or n for counter-2 and counter-3. Raises :class:`FormalDataError` for a
    request the language cannot meet (see :func:`check_request`)."""
    lang = language(name)
    lengths, test_lengths = tuple(int(x) for x in lengths), tuple(int(x) for x in test_lengths)
    sizes = tuple(int(s) for s in sizes)
    ranges = check_request(name, lengths, test_lengths, sizes)
    rng = random.Random(f"formal/{name}/{seed}")
    train_n, valid_n, test_n = sizes
    if lang.few:
        test = _repeated(lang, ranges["long"], test_n, rng)
        valid = _repeated(lang, ranges["short"], valid_n, rng)
        train = _repeated(lang, ranges["short"], train_n, rng)
    else:
        dealer = _Dealer(lang, rng)
        test = dealer.deal(ranges["long"], test_n)
        valid = dealer.deal(ranges["short"], valid_n)
        train = dealer.deal(ranges["short"], train_n)
        for split in (test, valid, train):
            rng.shuffle(split)
    known: dict = {}  # a repeated word's targets are worked out once

    def example(w):
        if w not in known:
            known[w] = (w, tuple(lang.targets(w)))
        return known[w]

    parts = {s: [example(w) for w in words] for s, words in (("train", train), ("valid", valid), ("test", test))}
    meta = {"task": "formal", "language": name, "alphabet": list(lang.alphabet), "words": lang.words,
            "options": {"lengths": list(lengths), "test_lengths": list(test_lengths),
                        "ranges_count": "n" if lang.by_n else "symbols"},
            "seed": seed, "sizes": {"train": train_n, "valid": valid_n, "test": test_n},
            "repeated": lang.few, "format": FORMAT, "format_version": FORMAT_VERSION}
    if lang.few:
        n_short = sum(lang.count(L) for L in ranges["short"])
        n_long = sum(lang.count(L) for L in ranges["long"])
        meta["note"] = (f"{name} has only {n_short} words of {_range_text(lang, *lengths)} and {n_long} of "
                        f"{_range_text(lang, *test_lengths)}: every split holds every word of its range, repeated up "
                        f"to its size, so train and valid coincide")
    return Splits(parts["train"], parts["valid"], parts["test"], meta)


# ------------------------------------------------------------------------------------------ the files

def format_line(example) -> str:
    symbols, targets = example
    return " ".join(symbols) + "\t" + " ".join(targets)


def parse_line(lang: Language, line: str):
    """One example of a split file; ``ValueError`` on a malformed line, a symbol outside the alphabet or a
    target that is not a sorted set of the language's classes."""
    fields_ = line.rstrip("\n").split("\t")
    if len(fields_) != 2:
        raise ValueError(f"expected 2 TAB-separated fields, got {len(fields_)}")
    symbols, targets = tuple(fields_[0].split()), tuple(fields_[1].split())
    if not symbols or len(symbols) != len(targets):
        raise ValueError(f"{len(symbols)} symbols but {len(targets)} targets")
    for s in symbols:
        if s not in lang.alphabet:
            raise ValueError(f"symbol {s!r} is not in the {lang.name} alphabet {' '.join(lang.alphabet)}")
    for t in targets:
        if any(c not in lang.classes for c in t) or "".join(sorted(set(t))) != t:
            raise ValueError(f"target {t!r} is not a sorted set of {''.join(sorted(lang.classes))}")
    return symbols, targets


def write_formal_splits(out_dir: str | os.PathLike, splits: Splits) -> Path:
    """Writes ``train.txt``, ``valid.txt``, ``test.txt`` and ``meta.json`` into ``out_dir`` (created), as
    :func:`fastweights.tasks.splits.write_splits` does: an empty path and a directory holding any of these files
    of another data set are refused (one-line ``ValueError``), the same data set is left as it is, and files are
    written atomically, ``meta.json`` last."""
    if str(out_dir).strip() == "":
        raise ValueError("out: the data directory is an empty path")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} exists and is not a directory")
    texts = {f"{s}.txt": "".join(format_line(ex) + "\n" for ex in examples) for s, examples in splits.items()}
    texts["meta.json"] = json.dumps(splits.meta, indent=2) + "\n"
    present = [name for name in SPLIT_FILES if (out / name).exists()]
    if present:
        if len(present) == len(SPLIT_FILES) and all(_same_text(out / n, texts[n]) for n in SPLIT_FILES):
            return out
        raise ValueError(f"out {out} already holds {', '.join(present)} of another data set; choose a new or "
                         f"empty directory (existing files are not overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        _write_atomic(out / name, texts[name])
    return out


def read_formal_split(path: str | os.PathLike, name: str) -> list:
    """The examples of one split file of language ``name``; ``ValueError`` naming file:line."""
    lang = language(name)
    return read_lines(path, lambda line: parse_line(lang, line))


def load_formal_splits(data_dir: str | os.PathLike) -> Splits:
    """Reads a directory written by :func:`write_formal_splits`; ``ValueError`` (one line, naming the file) for
    a missing, malformed or empty split, or a directory of another task."""
    d = Path(data_dir)
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        if meta.get("task") != "formal":
            raise ValueError(f"task {meta.get('task')!r}, not 'formal'")
        language(meta["language"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{d}: not a formal-language data directory (meta.json: {e})") from None
    parts = {}
    for split in SPLITS:
        try:
            parts[split] = read_formal_split(d / f"{split}.txt", meta["language"])
        except OSError as e:
            raise ValueError(f"{d}: cannot read {split}.txt: {e.strerror}") from None
        if not parts[split]:
            raise ValueError(f"{d / f'{split}.txt'}: the {split} split is empty (no words)")
    return Splits(parts["train"], parts["valid"], parts["test"], meta)


# ------------------------------------------------------------------------------------------ to tensors

def encode(name: str, examples: Sequence) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Per example the input ids (pad 0, then the alphabet) and per position the multi-hot target over
    :attr:`Language.classes` (the alphabet, then ``$``)."""
    lang = language(name)
    ids = {s: i + 1 for i, s in enumerate(lang.alphabet)}
    cls = {c: i for i, c in enumerate(lang.classes)}
    inputs, targets = [], []
    for symbols, tgt in examples:
        inputs.append([ids[s] for s in symbols])
        rows = []
        for t in tgt:
            row = [0] * len(lang.classes)
            for c in t:
                row[cls[c]] = 1
            rows.append(row)
        targets.append(rows)
    return inputs, targets


__all__ = ["LANGUAGES", "Language", "END", "FormalDataError", "language", "vocab", "check_request",
           "make_formal_splits", "write_formal_splits", "load_formal_splits", "read_formal_split", "encode",
           "format_line", "parse_line", "DEFAULT_LENGTHS", "DEFAULT_TEST_LENGTHS", "DEFAULT_SIZES", "MAX_LENGTH"]

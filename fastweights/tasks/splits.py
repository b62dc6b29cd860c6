"""Splits, files, vocabularies and tensors for the algorithmic tasks (``code-exec`` and ``listops``).

Files written by :func:`write_splits` (and ``fastweights data``), one directory per data set:

- ``train.txt``, ``valid.txt``, ``test.txt``: UTF-8 text, one example per line, ``\\n`` line ends,
  tokens separated by single spaces, and one TAB between the two fields:

  - ``code-exec``: ``SOURCE<TAB>TARGET``, both token sequences of the same length, e.g.
    ``x = 5 ; if x > 3 : print x ;<TAB>_ _ _ _ _ _ _ _ _ _ _ 5``;
  - ``listops``: ``TOKENS<TAB>LABEL``, e.g. ``[MAX 4 [MIN 1 0 ] 9 ]<TAB>9``.

- ``meta.json``: ``{"task", "options", "seed", "sizes": {"train", "valid", "test"}, "format", ...}``.

Splits never share an example: examples are drawn from one seeded stream, duplicates (same token
sequence) are dropped, and the test split is filled first, then valid, then train, so the test and
valid sets do not depend on the size of the training set.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import code_execution, listops

SPLITS = ("train", "valid", "test")
PAD = "<pad>"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------------------------- vocab

class Vocab:
    """A fixed token <-> id map; id 0 is the padding token ``<pad>``."""

    def __init__(self, tokens: Sequence[str]):
        self.itos = (PAD, *tokens)
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in vocabulary")
        self.pad_id = 0

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        try:
            return [self.stoi[t] for t in tokens]
        except KeyError as e:
            raise ValueError(f"token {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids if int(i) != self.pad_id]

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens, pad_id={self.pad_id})"


DIGITS = tuple(str(d) for d in range(10))
#: code execution, input side: variables, keywords and digits (25 ids with the pad).
CODE_EXEC_SRC_VOCAB = Vocab((*code_execution.VARIABLES, "=", "++", "--", ";", "print", "if", "<", ">", ":",
                             *DIGITS))
#: code execution, output side: ``_`` and every printable value -8..16 (27 ids with the pad).
CODE_EXEC_TGT_VOCAB = Vocab((code_execution.BLANK,
                             *(str(v) for v in range(code_execution.MIN_VALUE, code_execution.MAX_VALUE + 1))))
#: ListOps: every operator (whatever ``ops`` a data set uses), ``]`` and digits (17 ids with the pad).
LISTOPS_VOCAB = Vocab((*("[" + op for op in listops.ALL_OPS), listops.CLOSE, *DIGITS))
LISTOPS_NUM_CLASSES = 10


# ------------------------------------------------------------------------------------------ the tasks

@dataclass(frozen=True)
class _Task:
    name: str
    defaults: dict
    stream: Callable[..., Iterator]          # stream(rng, **options)
    key: Callable                            # example -> hashable token sequence used for dedup


TASKS = {
    "code-exec": _Task("code-exec", {"num_vars": 5, "length": 100},
                       lambda rng, num_vars, length: code_execution.iter_programs(rng, num_vars, length),
                       lambda ex: tuple(ex[0])),
    "listops": _Task("listops", {"depth": 10, "ops": list(listops.DEFAULT_OPS), "depth_convention": "nesting"},
                     lambda rng, depth, ops: listops.iter_examples(rng, depth, ops),
                     lambda ex: tuple(ex[0])),
}


def _task(name: str) -> _Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def _options(task: _Task, task_opts: dict) -> dict:
    unknown = set(task_opts) - set(task.defaults)
    if unknown:
        raise ValueError(f"unknown option(s) for {task.name}: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(task.defaults)}")
    opts = {**task.defaults, **task_opts}
    if "ops" in opts:
        opts["ops"] = list(listops.check_ops(opts["ops"]))
    return opts


@dataclass
class Splits:
    """Train / valid / test examples of one task, with the description of how they were made."""

    train: list
    valid: list
    test: list
    meta: dict = field(default_factory=dict)

    def __getitem__(self, split: str) -> list:
        if split not in SPLITS:
            raise KeyError(split)
        return getattr(self, split)

    def items(self):
        return [(s, self[s]) for s in SPLITS]


def _progress_bar(enabled: bool | None, total: int, description: str):
    """A rich progress bar on stderr when it is a terminal (or when forced on); otherwise None."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    return progress, progress.add_task(description, total=total)


def make_splits(task: str, sizes: Sequence[int] = (10000, 1000, 1000), seed: int = 0,
                progress: bool | None = None, max_duplicate_run: int = 100_000, **task_opts) -> Splits:
    """Disjoint train / valid / test splits of ``task`` (``"code-exec"`` or ``"listops"``).

    ``sizes`` are (train, valid, test). ``task_opts`` are the generator's options: ``num_vars``,
    ``length`` for code-exec, ``depth``, ``ops``, ``depth_convention`` for listops (``meta["options"]``
    holds the nesting depth the generator took, ``meta["listops_depth"]`` the depth as given, its
    convention and that nesting depth; see :func:`fastweights.tasks.listops.nesting_depth`). All examples are distinct (by token
    sequence), within and across splits. Deterministic for a seed; the examples are the stream of
    ``generate(..., seed=seed)`` with repeats removed, test first, then valid, then train.
    ``progress``: show a progress bar (None: only when stderr is a terminal). Raises ``ValueError`` if
    ``max_duplicate_run`` draws in a row are all repeats (the task has too few distinct examples).
    """
    spec = _task(task)
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != 3 or any(s < 0 for s in sizes):
        raise ValueError(f"sizes must be three non-negative integers (train, valid, test), got {sizes}")
    opts = _options(spec, task_opts)
    stated = {}
    if "depth_convention" in opts:  # ListOps: the generator takes the nesting; meta keeps how it was asked for
        convention = opts.pop("depth_convention")
        stated = {"listops_depth": {"depth": opts["depth"], "depth_convention": convention,
                                    "nesting_depth": listops.nesting_depth(opts["depth"], convention)}}
        opts["depth"] = stated["listops_depth"]["nesting_depth"]
    stream = spec.stream(random.Random(seed), **opts)
    bar = _progress_bar(progress, sum(sizes), f"generating {task}")
    out: dict[str, list] = {}
    seen: set = set()
    try:
        if bar:
            bar[0].start()
        for split, size in (("test", sizes[2]), ("valid", sizes[1]), ("train", sizes[0])):
            examples: list = []
            dup_run = 0
            while len(examples) < size:
                ex = next(stream)
                key = spec.key(ex)
                if key in seen:
                    dup_run += 1
                    if dup_run >= max_duplicate_run:
                        raise ValueError(f"{task} {opts}: only {len(seen)} distinct examples found after "
                                         f"{max_duplicate_run} repeats in a row; ask for fewer")
                    continue
                dup_run = 0
                seen.add(key)
                examples.append(ex)
                if bar:
                    bar[0].advance(bar[1])
            out[split] = examples
    finally:
        if bar:
            bar[0].stop()
    meta = {"task": task, "options": opts, "seed": seed,
            "sizes": {"train": sizes[0], "valid": sizes[1], "test": sizes[2]},
            "format": _FORMATS[task], "format_version": FORMAT_VERSION, **stated}
    return Splits(out["train"], out["valid"], out["test"], meta)


# ------------------------------------------------------------------------------------------ the files

_FORMATS = {
    "code-exec": "one program per line: space-separated source tokens, TAB, space-separated target tokens "
                 "(same count; '_' or the printed value on the ';' of an executed print)",
    "listops": "one example per line: space-separated tokens, TAB, the label (0..9)",
}


def format_line(task: str, example) -> str:
    if task == "code-exec":
        src, tgt = example
        return " ".join(src) + "\t" + " ".join(tgt)
    if task == "listops":
        tokens, label = example
        return " ".join(tokens) + "\t" + str(int(label))
    raise ValueError(f"unknown task {task!r}")


def parse_line(task: str, line: str):
    """One example of a split file; ``ValueError`` on a malformed line or a token outside the task's
    vocabulary."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 2:
        raise ValueError(f"expected 2 TAB-separated fields, got {len(fields)}")
    if task == "code-exec":
        src, tgt = fields[0].split(), fields[1].split()
        if len(src) != len(tgt) or not src:
            raise ValueError(f"source has {len(src)} tokens, target {len(tgt)}")
        _in_vocab(src, CODE_EXEC_SRC_VOCAB, "source")
        _in_vocab(tgt, CODE_EXEC_TGT_VOCAB, "target")
        return src, tgt
    if task == "listops":
        tokens = fields[0].split()
        if not tokens or not fields[1].strip().isdigit() or not 0 <= int(fields[1]) <= 9:
            raise ValueError(f"bad example or label {fields[1]!r}")
        _in_vocab(tokens, LISTOPS_VOCAB, "example")
        return tokens, int(fields[1])
    raise ValueError(f"unknown task {task!r}")


def _in_vocab(tokens, vocab: Vocab, what: str) -> None:
    for t in tokens:
        if t not in vocab or t == PAD:
            raise ValueError(f"{what} token {t!r} is not in the vocabulary")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


SPLIT_FILES = tuple(f"{s}.txt" for s in SPLITS) + ("meta.json",)


def _split_texts(splits: Splits) -> dict:
    task = splits.meta["task"]
    texts = {f"{split}.txt": "".join(format_line(task, ex) + "\n" for ex in examples)
             for split, examples in splits.items()}
    texts["meta.json"] = json.dumps(splits.meta, indent=2) + "\n"
    return texts


def write_splits(out_dir: str | os.PathLike, splits: Splits) -> Path:
    """Write ``train.txt``, ``valid.txt``, ``test.txt`` and ``meta.json`` into ``out_dir`` (created).

    Refuses (``ValueError``, one line) an empty path, and a directory that already holds any of these files
    unless they are exactly this data set (then nothing is rewritten): existing files are never overwritten."""
    if str(out_dir).strip() == "":
        raise ValueError("out: the data directory is an empty path")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out {out} exists and is not a directory")
    texts = _split_texts(splits)
    present = [name for name in SPLIT_FILES if (out / name).exists()]
    if present:
        same = len(present) == len(SPLIT_FILES) and all(_same_text(out / name, texts[name]) for name in SPLIT_FILES)
        if same:
            return out
        raise ValueError(f"out {out} already holds {', '.join(present)} of another data set; choose a new or "
                         f"empty directory (existing files are not overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:  # meta.json last: a directory with meta.json is complete
        _write_atomic(out / name, texts[name])
    return out


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def read_split(path: str | os.PathLike, task: str) -> list:
    """The examples of one split file, as ``generate`` returns them; ``ValueError`` naming file:line (a
    malformed line, a token outside the vocabulary, bytes that are not UTF-8)."""
    _task(task)
    return read_lines(path, lambda line: parse_line(task, line))


def read_lines(path: str | os.PathLike, parse) -> list:
    """``parse(line)`` of every non-blank line of a UTF-8 split file; a ``ValueError`` of ``parse`` comes back
    naming file:line, bytes that are not UTF-8 name the file."""
    examples = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    examples.append(parse(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{n}: {e}") from None
    except UnicodeDecodeError:
        raise ValueError(not_utf8_message(path)) from None
    return examples


def not_utf8_message(path) -> str:
    """``FILE:LINE: not UTF-8 text (...)`` for a file that fails to decode, naming its first bad line."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"{path}:{n}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})"
    return f"{path}: not UTF-8 text"


def load_splits(data_dir: str | os.PathLike) -> Splits:
    """Read a directory written by :func:`write_splits` / ``fastweights data``. ``ValueError`` (one line,
    naming the file) for a missing, malformed or empty split."""
    d = Path(data_dir)
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        task = meta["task"]
        _task(task)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{d}: not a fastweights data directory (meta.json: {e})") from None
    parts = {}
    for split in SPLITS:
        try:
            parts[split] = read_split(d / f"{split}.txt", task)
        except OSError as e:
            raise ValueError(f"{d}: cannot read {split}.txt: {e.strerror}") from None
        if not parts[split]:
            raise ValueError(f"{d / f'{split}.txt'}: the {split} split is empty (no examples)")
    return Splits(parts["train"], parts["valid"], parts["test"], meta)


# ---------------------------------------------------------------------------------------- to tensors

def encode(task: str, examples: Sequence) -> tuple[list[list[int]], list]:
    """Token ids per example, and per example the target: the target ids (code-exec) or the label."""
    if task == "code-exec":
        return ([CODE_EXEC_SRC_VOCAB.encode(s) for s, _ in examples],
                [CODE_EXEC_TGT_VOCAB.encode(t) for _, t in examples])
    if task == "listops":
        return [LISTOPS_VOCAB.encode(t) for t, _ in examples], [int(y) for _, y in examples]
    raise ValueError(f"unknown task {task!r}")


def to_tensors(task: str, examples: Sequence) -> dict:
    """A padded batch (right padding with the pad id 0), as torch tensors.

    code-exec: ``{"inputs": (B, T), "targets": (B, T) target ids, pad 0 past the end, "lengths": (B,)}``.
    listops: ``{"inputs": (B, T), "targets": (B,) labels 0..9, "lengths": (B,)}``; the label belongs to
    the last real token, ``inputs[b, lengths[b] - 1]``.
    """
    import torch

    ids, targets = encode(task, examples)
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    width = int(lengths.max()) if len(ids) else 0
    inputs = torch.zeros(len(ids), width, dtype=torch.long)
    for b, x in enumerate(ids):
        inputs[b, :len(x)] = torch.tensor(x, dtype=torch.long)
    if task == "code-exec":
        tgt = torch.zeros(len(ids), width, dtype=torch.long)
        for b, y in enumerate(targets):
            tgt[b, :len(y)] = torch.tensor(y, dtype=torch.long)
    else:
        tgt = torch.tensor(targets, dtype=torch.long)
    return {"inputs": inputs, "targets": tgt, "lengths": lengths}

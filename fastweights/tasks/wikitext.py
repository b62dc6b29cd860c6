"""WikiText-103 (Merity et al. 2016), word level: the vocabulary, the tokenised corpus and its cache.

A data directory in the standard layout holds ``wiki.train.tokens``, ``wiki.valid.tokens`` and
``wiki.test.tokens`` (the tokenised release: words separated by spaces, one paragraph or heading per line).

* Tokens: the words of every line, then ``<eos>`` at the end of every line (empty lines included). This
  is the standard count: 217,646 validation and 245,569 test tokens.
* Vocabulary: every word of the training file (``train_file`` overrides which file that is), most
  frequent first (ties in order of first appearance), so the adaptive softmax's frequent-word shortlist
  is a prefix of the ids. ``<unk>`` (which the release already uses for rare words) is always in it;
  validation/test words missing from the training file map to it and are counted
  (``Corpus.meta["oov"]``). With the full training file there are none (vocabulary 267,735).
* Cache: the token ids as ``.npy`` files (opened as read-only memory maps) beside ``vocab.txt`` and
  ``meta.json``, in a directory named after the SHA-256 of the three files, so a second run skips the
  tokenising; a changed file gives a new key (and a fresh cache). Written to a temporary directory and
  renamed into place, so a crash never leaves a half cache.
* :func:`download`: fetches the official archive, unpacks it and verifies every file it extracts (validation
  and test against their published SHA-256, the training file against its SHA-1 and the SHA-256 of its first
  bytes) before putting it in place; it never overwrites files; without a network it fails with one line
  (:class:`WikiTextError`).
* Empty files, non-UTF-8 bytes and files changed since a run recorded their checksums are refused with one
  line naming the file, before anything is tokenised or cached.

No torch here: ids are NumPy ``int32`` arrays.
"""

from __future__ import annotations

import hashlib
import json
from array import array
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EOS = "<eos>"
UNK = "<unk>"
SPLIT_FILES = {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"}
CACHE_VERSION = 1
# The tokenised release, as the dataset's authors distribute it (the older S3 address no longer answers).
OFFICIAL_URL = "https://wikitext.smerity.com/wikitext-103-v1.zip"
# SHA-256 of the files inside the archive that we can vouch for (see ../shared/data/README.md).
OFFICIAL_SHA256 = {
    "wiki.valid.tokens": "9aee9f52d6e77de6c7751fc5e7c44287db3ec0eaf15477098acc6b93c1c4250b",
    "wiki.test.tokens": "56db52eb157b1ab5c89646eef70510c1eca6e12a3bfdb99f0d6b05b4eacb75b9",
}
OFFICIAL_COUNTS = {"valid": 217_646, "test": 245_569}
# The training file (about 540 MB) has no published SHA-256. It is checked against its SHA-1 as GluonNLP's
# WikiText103 dataset records it (the same table's SHA-1s of wiki.valid.tokens and wiki.test.tokens,
# c326ac59... and 8a5befc5..., match the files of the SHA-256s above), and its first 2,882,983 bytes against
# the SHA-256 of the prefix in ../shared/data/README.md.
OFFICIAL_TRAIN_SHA1 = "b7497e2dfe77e72cfef5e3dbc61b7b53712ac211"
OFFICIAL_TRAIN_PREFIX = (2_882_983, "611df3b41f14ba024d70702dff829bfaca0f335aa93800ba7785c87a82ff88b5")


class WikiTextError(ValueError):
    """A missing or unreadable data file, a failed download or a failed check (one line)."""


# ------------------------------------------------------------------------------------------ tokens

def iter_tokens(path: str | os.PathLike):
    """The tokens of a file: each line's words, then ``<eos>``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield from line.split()
            yield EOS


def count_tokens(path: str | os.PathLike) -> int:
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += len(line.split()) + 1
    return n


def build_vocab(path: str | os.PathLike) -> tuple[list[str], list[int]]:
    """``(words, counts)`` of a training file, most frequent first, ties in order of first appearance;
    ``<unk>`` is added (count 0) if the file never uses it."""
    counts = Counter(iter_tokens(path))  # insertion order = first appearance; sorted() is stable
    if UNK not in counts:
        counts[UNK] = 0
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    return [w for w, _ in items], [c for _, c in items]


def encode_file(path: str | os.PathLike, word_to_id: dict, unk_id: int) -> tuple[np.ndarray, int]:
    """``(ids int32, number of tokens mapped to <unk> that were not <unk> in the file)``. Ids collect in
    an ``array('i')`` (4 bytes a word: about 0.4 GB for the full 103M-word training file)."""
    ids, oov, eos = array("i"), 0, word_to_id[EOS]
    get = word_to_id.get
    with open(path, encoding="utf-8") as f:
        for line in f:
            for w in line.split():
                i = get(w)
                if i is None:
                    i, oov = unk_id, oov + 1
                ids.append(i)
            ids.append(eos)
    return np.frombuffer(ids, dtype=np.int32).copy() if len(ids) else np.zeros(0, np.int32), oov


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ corpus

@dataclass
class Corpus:
    """The tokenised corpus: ``vocab`` (id -> word), ``train``/``valid``/``test`` int32 id arrays
    (read-only memory maps when loaded from the cache), ``meta`` (files, checksums, counts, OOV counts),
    ``cache_dir`` and ``from_cache`` (whether this load reused a cache)."""

    vocab: list
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    meta: dict
    cache_dir: Path | None = None
    from_cache: bool = False
    word_to_id: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.word_to_id:
            self.word_to_id = {w: i for i, w in enumerate(self.vocab)}

    def __getitem__(self, split: str) -> np.ndarray:
        if split not in SPLIT_FILES:
            raise KeyError(f"split must be one of {list(SPLIT_FILES)}, got {split!r}")
        return getattr(self, split)

    @property
    def eos_id(self) -> int:
        return self.word_to_id[EOS]

    @property
    def unk_id(self) -> int:
        return self.word_to_id[UNK]

    def encode(self, text: str) -> list[int]:
        """Space-separated words -> ids (unknown words -> ``<unk>``; a newline -> ``<eos>``)."""
        ids = []
        lines = text.split("\n")
        for n, line in enumerate(lines):
            ids.extend(self.word_to_id.get(w, self.unk_id) for w in line.split())
            if n + 1 < len(lines):
                ids.append(self.eos_id)
        return ids

    def decode(self, ids) -> str:
        """Ids -> text: words joined by spaces, ``<eos>`` as a line break."""
        out, line = [], []
        for i in ids:
            w = self.vocab[int(i)]
            if w == EOS:
                out.append(" ".join(line))
                line = []
            else:
                line.append(w)
        out.append(" ".join(line))
        return "\n".join(out)


def split_paths(data_dir: str | os.PathLike | None, train_file: str | os.PathLike | None = None) -> dict:
    """The three files of a data directory (``train_file`` replaces the training file); a missing one
    raises :class:`WikiTextError` naming it."""
    paths = {}
    for split, name in SPLIT_FILES.items():
        if split == "train" and train_file is not None:
            paths[split] = Path(train_file)
        elif data_dir is None:
            raise WikiTextError(f"no data directory given for {name}")
        else:
            paths[split] = Path(data_dir) / name
    for split, p in paths.items():
        if not p.is_file():
            hint = (" (use --train-file for a training file with another name)" if split == "train"
                    and train_file is None else "")
            raise WikiTextError(f"{p}: no such file{hint}; a WikiText-103 directory holds "
                                f"{', '.join(SPLIT_FILES.values())} ('fastweights data wikitext-103 --out DIR')")
    return paths


def default_cache_root() -> Path:
    """``$FASTWEIGHTS_CACHE`` or ``~/.cache/fastweights``, then ``wikitext``."""
    root = os.environ.get("FASTWEIGHTS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fastweights")
    return Path(root) / "wikitext"


def cache_key(checksums: dict) -> str:
    text = json.dumps({"version": CACHE_VERSION, **{s: checksums[s] for s in SPLIT_FILES}}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load_corpus(data_dir: str | os.PathLike | None, train_file: str | os.PathLike | None = None,
                cache_root: str | os.PathLike | None = None, log=None, expected_sha256: dict | None = None) -> Corpus:
    """Reads (or reuses the cache of) a WikiText directory; see the module doc. ``log`` (a callable)
    hears what happens. ``expected_sha256`` (``{split: hex digest}``, e.g. a run's ``data_sha256``): the
    files must still have these checksums, checked before any cache is read or written.

    Raises :class:`WikiTextError` (one line, naming the file) for a missing, unreadable, empty or non-UTF-8
    file, or a changed one."""
    paths = split_paths(data_dir, train_file)
    for split, p in paths.items():
        try:
            empty = p.stat().st_size == 0
        except OSError as e:
            raise WikiTextError(f"cannot read {p}: {e.strerror}") from None
        if empty:
            raise WikiTextError(f"{p}: the {split} file is empty")
    try:
        checksums = {s: sha256_file(p) for s, p in paths.items()}
    except OSError as e:
        raise WikiTextError(f"cannot read {e.filename}: {e.strerror}") from None
    if expected_sha256 is not None:
        changed = [s for s in expected_sha256 if checksums.get(s) != expected_sha256[s]]
        if changed:
            files = ", ".join(str(paths[s]) for s in changed if s in paths)
            raise WikiTextError(f"the data files changed since this run started ({', '.join(changed)} differ "
                                f"from the checksums in its config.json: {files})")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    cdir = root / cache_key(checksums)
    if (cdir / "meta.json").is_file():
        try:
            return _read_cache(cdir)
        except (OSError, ValueError, KeyError) as e:  # a damaged cache is rebuilt
            if log:
                log(f"cache {cdir} is unreadable ({e}); rebuilding it")
    if log:
        log(f"tokenising {paths['train']} (vocabulary), {paths['valid'].name} and {paths['test'].name}")
    arrays, oov = {}, {}
    reading = paths["train"]
    try:
        words, counts = build_vocab(reading)
        w2i = {w: i for i, w in enumerate(words)}
        for s, p in paths.items():
            reading = p
            arrays[s], oov[s] = encode_file(p, w2i, w2i[UNK])
    except UnicodeDecodeError:
        from .splits import not_utf8_message

        raise WikiTextError(not_utf8_message(reading)) from None
    except OSError as e:
        raise WikiTextError(f"cannot read {reading}: {e.strerror or e}") from None
    meta = {"version": CACHE_VERSION, "files": {s: str(Path(p).resolve()) for s, p in paths.items()},
            "sha256": checksums, "tokens": {s: int(len(a)) for s, a in arrays.items()}, "oov": oov,
            "unk": {s: int(np.count_nonzero(a == w2i[UNK])) for s, a in arrays.items()},
            "vocab_size": len(words)}
    try:
        _write_cache(cdir, words, counts, arrays, meta)
    except OSError as e:
        if log:
            log(f"could not write the cache to {cdir} ({e.strerror or e}); going on without it")
        return Corpus(words, arrays["train"], arrays["valid"], arrays["test"], meta, None, False, w2i)
    corpus = _read_cache(cdir)
    corpus.from_cache = False
    return corpus


def _write_cache(cdir: Path, words, counts, arrays, meta) -> None:
    cdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cdir.name}.tmp-", dir=cdir.parent))
    try:
        with open(tmp / "vocab.txt", "w", encoding="utf-8") as f:
            f.writelines(f"{w}\t{c}\n" for w, c in zip(words, counts))
        for s, a in arrays.items():
            np.save(tmp / f"{s}.npy", a)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if cdir.exists():  # a damaged cache of the same key
            shutil.rmtree(cdir)
        os.replace(tmp, cdir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(cdir: Path) -> Corpus:
    meta = json.loads((cdir / "meta.json").read_text(encoding="utf-8"))
    words = []
    with open(cdir / "vocab.txt", encoding="utf-8") as f:
        for line in f:
            w, _, _ = line.rstrip("\n").rpartition("\t")
            words.append(w)
    if len(words) != meta["vocab_size"]:
        raise ValueError(f"vocab.txt has {len(words)} words, meta.json says {meta['vocab_size']}")
    arrays = {}
    for s in SPLIT_FILES:
        a = np.load(cdir / f"{s}.npy", mmap_mode="r")
        if a.dtype != np.int32 or a.ndim != 1 or len(a) != meta["tokens"][s]:
            raise ValueError(f"{s}.npy does not match meta.json")
        arrays[s] = a
    return Corpus(words, arrays["train"], arrays["valid"], arrays["test"], meta, cdir, True)


# ------------------------------------------------------------------------------------------ download

def _official_checks() -> dict:
    checks = {name: {"sha256": digest} for name, digest in OFFICIAL_SHA256.items()}
    checks[SPLIT_FILES["train"]] = {"sha1": OFFICIAL_TRAIN_SHA1, "prefix_sha256": OFFICIAL_TRAIN_PREFIX}
    return checks


def _check_file(path: Path, check: dict) -> tuple[str, str | None]:
    """``(sha256, what failed or None)`` of ``path`` against ``check`` (``sha256``, ``sha1``, ``prefix_sha256``:
    ``(length, digest)`` of the first bytes), in one read."""
    full, sha1 = hashlib.sha256(), hashlib.sha1()
    prefix_len, prefix_want = check.get("prefix_sha256", (0, None))
    prefix, seen = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            full.update(b)
            sha1.update(b)
            if seen < prefix_len:
                prefix.update(b[: prefix_len - seen])
            seen += len(b)
    got = full.hexdigest()
    if "sha256" in check and got != check["sha256"]:
        return got, f"SHA-256 {got}, expected {check['sha256']}"
    if "sha1" in check and sha1.hexdigest() != check["sha1"]:
        return got, f"SHA-1 {sha1.hexdigest()}, expected {check['sha1']}"
    if prefix_want is not None and (seen < prefix_len or prefix.hexdigest() != prefix_want):
        return got, f"its first {prefix_len:,} bytes have SHA-256 {prefix.hexdigest()}, expected {prefix_want}"
    return got, None


def download(out_dir: str | os.PathLike, url: str = OFFICIAL_URL, expected_sha256: dict | None = None,
             timeout: float = 30.0, log=None) -> dict:
    """Downloads the archive at ``url``, unpacks its ``wiki.*.tokens`` files into ``out_dir`` and verifies
    every one before it is put in place: by default against the official release (validation and test by
    SHA-256, the training file by SHA-1 and the SHA-256 of its first bytes, see ``OFFICIAL_TRAIN_SHA1``);
    ``expected_sha256`` (``{file name: sha256}``) replaces those checks and must name all three files.
    Returns ``{file name: sha256}``.

    ``out_dir`` must not be an empty path. Files already there are never overwritten: if all three are
    there and verify, nothing is downloaded; if any is there and the set does not verify, it is refused.
    Raises :class:`WikiTextError` (one line) when the network, the archive or a check fails."""
    import urllib.error
    import urllib.request
    import zipfile

    if str(out_dir).strip() == "":
        raise WikiTextError("--out: the data directory is an empty path")
    if expected_sha256 is None:
        checks = _official_checks()
    else:
        checks = {name: {"sha256": digest} for name, digest in expected_sha256.items()}
        unchecked = [n for n in SPLIT_FILES.values() if n not in checks]
        if unchecked:
            raise WikiTextError(f"no checksum for {', '.join(unchecked)}: every extracted file is verified")
    out = Path(out_dir)
    present = [n for n in SPLIT_FILES.values() if (out / n).exists()]
    if present:
        if len(present) == len(SPLIT_FILES):
            results = {n: _check_file(out / n, checks[n]) for n in present}
            if all(bad is None for _, bad in results.values()):
                if log:
                    log(f"{out} already holds the verified {', '.join(present)}; nothing downloaded")
                return {n: digest for n, (digest, _) in results.items()}
        raise WikiTextError(f"{out} already holds {', '.join(present)}, not the verified release; choose a new or "
                            f"empty directory (existing files are not overwritten)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WikiTextError(f"cannot create {out}: {e.strerror or e}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=".wikitext-download-", suffix=".zip", dir=out)
    tmp = Path(tmp_name)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as f:
                fd = None
                shutil.copyfileobj(resp, f, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise WikiTextError(f"cannot download {url} ({reason}); is a network reachable? Otherwise put "
                                f"{', '.join(SPLIT_FILES.values())} into {out} by hand") from None
        try:
            with zipfile.ZipFile(tmp) as z:
                members = {Path(n).name: n for n in z.namelist() if Path(n).name in SPLIT_FILES.values()}
                missing = [n for n in SPLIT_FILES.values() if n not in members]
                if missing:
                    raise WikiTextError(f"{url}: the archive lacks {', '.join(missing)}")
                for name, member in members.items():
                    with z.open(member) as src, open(out / f".{name}.part", "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except zipfile.BadZipFile as e:
            raise WikiTextError(f"{url}: not a zip archive ({e})") from None
        sums = {}
        for name in SPLIT_FILES.values():
            sums[name], bad = _check_file(out / f".{name}.part", checks[name])
            if bad is not None:
                raise WikiTextError(f"{url}: {name} has {bad}; the download is damaged or not the official "
                                    f"release")
        for name in SPLIT_FILES.values():
            os.replace(out / f".{name}.part", out / name)
        if log:
            log(f"wrote {', '.join(SPLIT_FILES.values())} to {out} (verified)")
        return sums
    finally:
        if fd is not None:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        for name in SPLIT_FILES.values():
            (out / f".{name}.part").unlink(missing_ok=True)

"""``fastweights data formal``: the train/valid/test splits of a formal language as text files (see
:mod:`fastweights.tasks.formal`). Every bad flag is one line naming it (exit 2), checked before any word is made."""

from __future__ import annotations

from .args import number, number_list, output_dir

FLAGS = {"language": "--language", "lengths": "--lengths", "test_lengths": "--test-lengths", "sizes": "--sizes"}


def _language(text: str) -> str:
    from ..tasks.formal import LANGUAGES

    if text not in LANGUAGES:
        raise ValueError(f"--language: unknown language {text!r}; choose from {', '.join(LANGUAGES)}")
    return text


def _range(flag: str):
    from ..tasks.formal import MAX_LENGTH

    pair = number_list(flag, low=1, high=MAX_LENGTH, length=2)

    def parse(text: str) -> tuple[int, int]:
        lo, hi = pair(text)
        if lo > hi:
            raise ValueError(f"{flag}: MIN must not be above MAX, got {text!r}")
        return lo, hi

    parse.__name__ = flag
    return parse


def add_data_formal(data_sub) -> None:
    """Adds ``formal`` to the ``data`` sub-commands."""
    from ..tasks.formal import DEFAULT_LENGTHS, DEFAULT_SIZES, DEFAULT_TEST_LENGTHS, LANGUAGES, MAX_SIZE

    d = data_sub.add_parser("formal", help="a formal language's words with their next-symbol sets "
                                           "(symbols<TAB>targets per line)",
                            description="Train/valid words of lengths 1-50 and test words of 51-100 (n for counter-2 "
                                        "and counter-3), each line the symbols, a TAB, and after each prefix the set "
                                        "of symbols that can follow it ($: the prefix is a word).")
    d.add_argument("--language", required=True, type=_language, metavar="NAME",
                   help=f"one of {', '.join(LANGUAGES)}")
    d.add_argument("--out", required=True, metavar="DIR", type=output_dir("--out"), help="output directory (created)")
    d.add_argument("--seed", type=number("--seed", low=0, high=2**32 - 1), default=0, help="seed (default 0)")
    d.add_argument("--sizes", type=number_list("--sizes", low=1, high=MAX_SIZE, length=3), default=DEFAULT_SIZES,
                   metavar="TRAIN,VALID,TEST",
                   help=f"words per split (default {','.join(str(s) for s in DEFAULT_SIZES)})")
    d.add_argument("--lengths", type=_range("--lengths"), default=DEFAULT_LENGTHS, metavar="MIN,MAX",
                   help="word lengths of train and valid, n for counter-2/3 (default "
                        f"{DEFAULT_LENGTHS[0]},{DEFAULT_LENGTHS[1]})")
    d.add_argument("--test-lengths", type=_range("--test-lengths"), default=DEFAULT_TEST_LENGTHS, metavar="MIN,MAX",
                   help="word lengths of the test split, n for counter-2/3 (default "
                        f"{DEFAULT_TEST_LENGTHS[0]},{DEFAULT_TEST_LENGTHS[1]})")
    d.set_defaults(func=data_formal_command)


def data_formal_command(args) -> int:
    import time

    from rich.console import Console

    from ..tasks.formal import FormalDataError, make_formal_splits, write_formal_splits

    start = time.perf_counter()
    try:
        splits = make_formal_splits(args.language, args.lengths, args.test_lengths, args.sizes, args.seed)
    except FormalDataError as e:
        raise ValueError(f"{FLAGS.get(e.field, e.field)}: {e.detail}") from None
    try:
        write_formal_splits(args.out, splits)
    except OSError as e:
        raise ValueError(f"--out: cannot write to {args.out}: {e.strerror or e}") from None
    except ValueError as e:  # "out ...": refused (an empty path, another data set's files)
        raise ValueError(f"--{e}" if str(e).startswith("out") else f"--out: {e}") from None
    sizes = "/".join(str(len(splits[s])) for s in ("train", "valid", "test"))
    note = " (every word repeated: train and valid coincide)" if splits.meta.get("repeated") else ""
    Console(stderr=True).log(f"wrote {args.language} train/valid/test {sizes} to {args.out}{note} "
                             f"in {time.perf_counter() - start:.1f} s")
    return 0


__all__ = ["add_data_formal", "data_formal_command"]

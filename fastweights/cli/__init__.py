"""The ``fastweights`` command line. Thin: parses flags and calls into the library.

* :mod:`.train`: ``train KIND`` for every run kind, every flag generated from the kind's declared config fields
  (:mod:`fastweights.train.options`), and ``migrate``;
* :mod:`.tools`, :mod:`.lm_tools`, :mod:`.rl_tools`: ``bench``, ``models``, ``data``, ``compare``, ``eval``,
  ``generate``;
* :mod:`.args`: the number syntax, bounds and output-path checks every command shares, and the flag generator.

Every error a user can cause is one line on stderr (``fastweights: error: ...``) and exit code 2; a run that
cannot go on exits 1; a run stopped by SIGINT or SIGTERM exits 130 or 143 after saving.
"""

from __future__ import annotations

import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime; an explicit setting
# wins). Spinning threads steal the cores from everything else: with other processes on the machine, small
# models trained 10-20x slower in CPU time (results of the formal-language runs, docs/training.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser():
    from .args import Parser
    from .export import add_export_command
    from .tools import add_tool_commands
    from .train import add_migrate_command, add_train_commands

    parser = Parser(prog="fastweights", description="Fast Weight Programmers for PyTorch.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_train_commands(sub)
    add_tool_commands(sub)
    add_migrate_command(sub)
    add_export_command(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag (one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except ValueError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastweights: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

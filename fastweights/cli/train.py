"""``fastweights train KIND`` for every run kind of :data:`fastweights.train.runs.KINDS`, and ``fastweights
migrate``. Every flag of a train sub-command is generated from its config's declared fields
(:func:`.args.add_config_flags`), so a new field is a new flag, with its help, bounds and resume rule."""

from __future__ import annotations

import sys

from .args import add_config_flags, flag_for_field, given_fields, output_dir, run_dir

def add_train_commands(sub) -> None:
    from ..train.runs import KINDS

    train_p = sub.add_parser("train", help="train a model: an algorithmic task, a language model or an RL agent")
    train_sub = train_p.add_subparsers(dest="command", required=True, metavar="TASK")
    for kind in KINDS.values():
        cls = kind.config_class()
        for command, help_ in kind.commands.items():
            p = train_sub.add_parser(command, help=help_, description=help_)
            p.add_argument("--config", metavar="FILE", default=None,
                           help="a recipe (YAML or JSON mapping of field names to values); flags override it")
            p.add_argument("--resume", action="store_true",
                           help="continue the run in --out from its last checkpoint (its saved config is used; "
                                "only the fields marked resumable may change)")
            add_config_flags(p, cls, command)
            p.set_defaults(func=train_command, run_kind=kind.name)


def _flag_error(cls, e) -> ValueError:
    flag = flag_for_field(cls, getattr(e, "field", None) or "")
    return ValueError(f"{flag}: {e}" if flag else str(e))


def train_command(args) -> int:
    from ..train.options import ConfigError, load_recipe
    from ..train.runs import KINDS, RunError, new_config, resume_config, train

    cls = KINDS[args.run_kind].config_class()
    given = {}
    if args.config is not None:
        given.update({k.replace("-", "_"): v for k, v in load_recipe(args.config).items()})
        given.pop("kind", None)
        given.pop("format", None)
        bad = sorted(set(given) - {f for f in cls.__dataclass_fields__})
        if bad:
            raise ValueError(f"--config: {args.config}: unknown field(s) {', '.join(bad)} for a {cls.kind} run")
    given.update(given_fields(args, cls, args.command))
    try:
        if args.resume:
            if "out" not in given:
                raise ValueError("--resume: give the run directory with --out")
            cfg = resume_config(given["out"], given, expect=args.run_kind)
            if cls.command_field and getattr(cfg, cls.command_field) != args.command:
                raise ValueError(f"--resume: {given['out']} is a {getattr(cfg, cls.command_field)} run, not "
                                 f"{args.command}")
            _check_length_not_below_progress(cfg, cls)
        else:
            _check_generator_flags(cls, given)
            cfg = new_config(args.command, given)
        summary = train(cfg, resume=args.resume)
    except ConfigError as e:
        raise _flag_error(cls, e) from None
    except RunError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 1
    from ..train.common import StopSignals

    code = StopSignals.exit_code(summary.get("stopped"))
    if code is not None:
        return code
    return 0 if summary["status"] in ("completed", "stopped") else 1


GENERATOR_FIELDS = ("num_vars", "length", "depth", "depth_convention", "ops", "sizes", "data_seed")


def _check_generator_flags(cls, given: dict) -> None:
    """``--data`` reads the splits from a directory, so the flags that generate splits would be ignored."""
    if given.get("data_dir") is None:
        return
    for name in GENERATOR_FIELDS:
        if name in given:
            raise ValueError(f"{flag_for_field(cls, name)}: not used with --data (the splits and their options come "
                             f"from {given['data_dir']}/meta.json); drop one of the two")


def _check_length_not_below_progress(cfg, cls) -> None:
    """``--resume`` with a length below the steps already taken would end at once: refuse it."""
    from ..train.checkpoint import CheckpointError, read_pointer

    try:
        ptr = read_pointer(f"{cfg.out}/checkpoints", "last")
    except CheckpointError:
        return  # the run's own resume reports a damaged pointer
    if ptr is None:
        return
    step = ptr["step"]
    total = getattr(cfg, "total_steps", None) if cfg.kind == "rl" else cfg.steps
    if total is not None and total < step:
        flag = "--frames" if cfg.kind == "rl" else "--steps"
        raise ValueError(f"{flag}: the run is already at step {step}, past the {total} steps asked for; give a "
                         f"larger value to continue it")


def add_migrate_command(sub) -> None:
    p = sub.add_parser("migrate", help="rewrite run directories' config.json in the current format (kind recorded, "
                                       "paths relative to the run)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=run_dir)
    p.set_defaults(func=migrate_command)


def migrate_command(args) -> int:
    from ..train.runs import migrate

    for d in args.run_dirs:
        changed = migrate(d)
        what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        print(f"{d}: {what}" if changed else f"{d}: already current")
    return 0


__all__ = ["add_train_commands", "add_migrate_command", "output_dir"]

"""The command line of the RL part: ``fastweights train atari|memory`` and the RL branch of ``eval``.

Every flag is read as text and validated by :class:`~fastweights.rl.config.RLConfig`, so a bad value
gives one line naming the flag.
"""

from __future__ import annotations

import sys


def _text(flag, t):
    return t


def _int(flag: str, text: str) -> int:
    try:
        value = float(text) if any(c in text for c in "eE.") else int(text)
    except ValueError:
        raise ValueError(f"{flag}: expected an integer, got {text!r}") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{flag}: expected an integer, got {text!r}")
        value = int(value)
    return value


def _float(flag: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag}: expected a number, got {text!r}") from None


def _bool(flag: str, text: str) -> bool:
    value = {"on": True, "true": True, "yes": True, "1": True, "off": False, "false": False, "no": False,
             "0": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"{flag}: expected on or off, got {text!r}")
    return value


def _optional_float(flag: str, text: str):
    return None if text.strip().lower() in ("none", "off") else _float(flag, text)


def _optional_int(flag: str, text: str):
    return None if text.strip().lower() in ("none", "auto") else _int(flag, text)


# flag -> (RLConfig field, parser, help); "atari"/"memory" marks a flag of one environment only
RL_FLAGS = {
    "--game": ("game", _text, "Atari game, e.g. Pong, Breakout, Boxing (default Pong)", "atari"),
    "--frame-skip": ("frame_skip", _int, "frames per action, max-pooled over the last two (default 4)", "atari"),
    "--noop-max": ("noop_max", _int, "at most this many no-ops after a reset (default 30)", "atari"),
    "--max-episode-frames": ("max_episode_frames", _int, "cap of one game in emulator frames (default 108000)",
                             "atari"),
    "--episodic-life": ("episodic_life", _bool, "on (default, as the paper's code): a lost life ends a learning "
                                                "episode (returns still count full games); off", "atari"),
    "--fire-reset": ("fire_reset", _bool, "on (default, as the paper's code): press FIRE after every reset and "
                                          "lost life, in games that have it; off", "atari"),
    "--cues": ("cues", _int, "number of cues to tell apart (default 2)", "memory"),
    "--delay": ("delay", _int, "blank steps between cue and query (default 10)", "memory"),
    "--encoder": ("encoder", _text, "deep (IMPALA ResNet, default) or shallow (Nature-DQN)", "atari"),
    "--features": ("features", _int, "encoder output width (default 256)", None),
    "--core": ("core", _text, "lstm, rdn (default), delta-rnn, deltanet, lt, ... or ff (no memory)", None),
    "--core-dim": ("core_dim", _optional_int, "core width (default 128 for FWPs, 256 for lstm/ff)", None),
    "--core-layers": ("core_layers", _int, "FWP blocks (default 2)", None),
    "--core-heads": ("core_heads", _int, "FWP heads (default 4)", None),
    "--core-ff": ("core_ff", _optional_int, "FWP feedforward width (default 4 x core dim)", None),
    "--init": ("init", _text, "weight initialisation: torch (PyTorch's default, as the paper's code) or "
                              "orthogonal (A2C/PPO's; policy head gain 0.01)", None),
    "--frames": ("frames", _int, "environment frames in total, e.g. 2e6 (Atari: emulator frames)", None),
    "--batch-size": ("batch_size", _int, "trajectories per update (default 32)", None),
    "--unroll": ("unroll", _int, "steps per trajectory (default 50)", None),
    "--lr": ("lr", _float, "RMSprop learning rate, decayed linearly to 0 (default 6e-4)", None),
    "--rms-alpha": ("rms_alpha", _float, "RMSprop smoothing (default 0.99)", None),
    "--rms-eps": ("rms_eps", _float, "RMSprop epsilon (default 0.01)", None),
    "--grad-clip": ("grad_clip", _optional_float, "max gradient norm or none (default 40)", None),
    "--entropy-cost": ("entropy_cost", _float, "entropy bonus weight (default 0.01)", None),
    "--baseline-cost": ("baseline_cost", _float, "baseline loss weight (default 0.5)", None),
    "--discount": ("discount", _float, "discount gamma (default 0.99)", None),
    "--reward-clip": ("reward_clip", _optional_float, "clip rewards to +-this, or none (default 1)", None),
    "--actors": ("actors", _int, "actor processes; 0 = step the environments in the learner (default 2)", None),
    "--envs-per-actor": ("envs_per_actor", _optional_int, "environments per actor (default batch/actors)", None),
    "--queue-size": ("queue_size", _optional_int, "rollouts the actors may have ready (shared-memory slots; "
                                                  "default two batches)", None),
    "--threads": ("threads", _optional_int, "learner torch threads (default: Atari every core, memory env "
                                            "the cores the actors leave, at least 1)", None),
    "--actor-threads": ("actor_threads", _int, "torch threads per actor (default 1)", None),
    "--seed": ("seed", _int, "seed (default 0)", None),
    "--out": ("out", _text, "run directory (default runs/ENV-CORE-sSEED)", None),
    "--log-interval": ("log_interval", _int, "learner steps between metric records (default 10)", None),
    "--save-interval": ("save_interval", _int, "learner steps between checkpoints (default 100)", None),
    "--time-budget": ("time_budget_minutes", _optional_float, "stop after MINUTES of training (summed over "
                                                              "--resume)", None),
    "--budget-clock": ("budget_clock", _text, "'wall' (default) or 'cpu' time for --time-budget", None),
}


def add_train_parsers(train_sub) -> None:
    """Adds ``train atari`` and ``train memory`` to the ``train`` sub-command parser."""
    for env, help_ in (("atari", "IMPALA on an Atari game (the paper's recipe; needs ale-py)"),
                       ("memory", "IMPALA on the cue-recall memory environment (seconds to minutes on a CPU)")):
        p = train_sub.add_parser(env, help=help_)
        for flag, (field, _, text, only) in RL_FLAGS.items():
            if only not in (None, env):
                continue
            if flag == "--encoder" and env == "memory":
                continue
            p.add_argument(flag, dest=field, default=None, metavar=field.upper(), help=text)
        p.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint (its saved config is used)")
        p.set_defaults(func=train_command, rl_env=env)


def _flag_error(e) -> ValueError:
    flags = {field: flag for flag, (field, *_rest) in RL_FLAGS.items()}
    flag = flags.get(getattr(e, "field", None))
    return ValueError(f"{flag}: {e}" if flag else str(e))


def train_command(args) -> int:
    from .rl import RLConfig, RLError, resume_rl_config, train
    from .train.config import TrainConfigError

    given = {}
    for flag, (field, parse, _, _) in RL_FLAGS.items():
        text = getattr(args, field, None)
        if text is not None:
            given[field] = parse(flag, text)
    try:
        if args.resume:
            if "out" not in given:
                raise ValueError("--resume: give the run directory with --out")
            cfg = resume_rl_config(given["out"], given)
        else:
            given["env"] = args.rl_env
            if "out" not in given:
                name = given.get("game", "Pong") if args.rl_env == "atari" else "memory"
                given["out"] = f"runs/{name}-{given.get('core', 'rdn')}-s{given.get('seed', 0)}"
            cfg = RLConfig(**given)
        summary = train(cfg, resume=args.resume)
    except TrainConfigError as e:  # RLConfigError, or the run start's check of --out
        raise _flag_error(e) from None
    except RLError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 1
    return 0 if summary["status"] in ("completed", "stopped") else 1


def eval_command(args) -> int:
    """``fastweights eval RUN_DIR --episodes N`` for an RL run: greedy play, mean +- std of returns."""
    import json

    from .rl import evaluate_rl_run

    which = args.checkpoint
    result = evaluate_rl_run(args.run_dir, episodes=args.episodes, which=which, greedy=not args.sample)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['env']}, core {result['core']}, encoder {result['encoder']}, {result['checkpoint']} checkpoint "
          f"(step {result['step']}, {result['frames']:,} frames), {result['policy']}, {result['episodes']} episodes "
          f"in {result['seconds']:.0f} s:")
    print(f"  return     {result['return_mean']:.2f} +- {result['return_std']:.2f} "
          f"(min {result['return_min']:g}, max {result['return_max']:g})")
    if "success" in result:
        print(f"  success    {100 * result['success']:.1f}%")
    print(f"  length     {result['episode_length_mean']:.1f} steps")
    return 0


def add_eval_flags(ev) -> None:
    """``--episodes`` of ``fastweights eval`` (RL runs only)."""
    ev.add_argument("--episodes", default=None, metavar="N",
                    help="RL runs: greedy episodes to play (default 30); full games, raw scores")
    ev.add_argument("--sample", action="store_true",
                    help="RL runs: draw actions from the policy instead of taking the most likely one (greedy "
                         "play on the deterministic Atari emulator often repeats one game)")


def maybe_eval(args):
    """Runs the RL evaluation if ``args.run_dir`` is an RL run (returns its exit code), else None;
    ``--episodes`` on another kind of run is an error naming the flag."""
    from .rl import is_rl_run

    if not is_rl_run(args.run_dir):
        if getattr(args, "episodes", None) is not None:
            raise ValueError(f"--episodes: applies to RL runs only; {args.run_dir} is not one")
        if getattr(args, "sample", False):
            raise ValueError(f"--sample: applies to RL runs only; {args.run_dir} is not one")
        return None
    text = getattr(args, "episodes", None)
    args.episodes = 30 if text is None else _int("--episodes", text)
    if args.episodes < 1:
        raise ValueError(f"--episodes: must be a positive integer, got {text!r}")
    return eval_command(args)

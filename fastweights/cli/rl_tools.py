"""The RL branch of ``fastweights eval`` (``train atari|memory`` are generated with every other ``train``
command from :class:`~fastweights.rl.config.RLConfig`'s declared fields)."""

from __future__ import annotations

from .args import number

RL_EVAL_FLAGS = {"episodes": "--episodes", "sample": "--sample"}


def eval_command(args) -> int:
    """``fastweights eval RUN_DIR --episodes N`` for an RL run: greedy play, mean +- std of returns."""
    import json

    from ..rl import evaluate_rl_run

    episodes = 30 if args.episodes is None else args.episodes
    result = evaluate_rl_run(args.run_dir, episodes=episodes, which=args.checkpoint, greedy=not args.sample)
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
    """``--episodes`` and ``--sample`` of ``fastweights eval`` (RL runs only)."""
    ev.add_argument("--episodes", type=number("--episodes", low=1, high=10**6), default=None, metavar="N",
                    help="RL runs: greedy episodes to play (default 30); full games, raw scores")
    ev.add_argument("--sample", action="store_true",
                    help="RL runs: draw actions from the policy instead of taking the most likely one (greedy "
                         "play on the deterministic Atari emulator often repeats one game)")

"""The score of uniformly random play under a run's own environment settings (episodic life and FIRE
after a lost life included), over full games: the level a learning curve starts from.

    python results/atari/scripts/random_play.py RUN_DIR [--episodes 30]

Prints the mean +- standard deviation of the raw game scores.
"""

import argparse
import statistics

from fastweights.rl import load_rl_config
from fastweights.rl.actors import make_env


def random_steps(cfg, seed: int):
    """Uniformly random play of ``cfg``'s environment, game after game: yields ``(obs, reward, game_over)``
    for every step (a new game starts after a finished one)."""
    env = make_env(cfg)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    try:
        while True:
            obs, r, term, trunc, _ = env.step(env.action_space.sample())
            yield obs, r, term or trunc
            if term or trunc:
                env.reset()
    finally:
        env.close()


def random_returns(cfg, episodes: int, seed: int = 12345) -> list[float]:
    returns, total = [], 0.0
    for _, r, game_over in random_steps(cfg, seed):
        total += r
        if game_over:
            returns.append(total)
            total = 0.0
            if len(returns) == episodes:
                return returns


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=int, default=30)
    args = p.parse_args()
    cfg = load_rl_config(args.run_dir)
    r = random_returns(cfg, args.episodes)
    print(f"{cfg.game}: random play {statistics.mean(r):.2f} +- {statistics.stdev(r):.2f} "
          f"over {len(r)} full games (min {min(r):g}, max {max(r):g})")


if __name__ == "__main__":
    main()

"""What an RL run's encoder makes of real frames: plays 200 random steps of the run's game, encodes the
frames with the run's last checkpoint and with a fresh agent of the same config, and prints the share of
feature units that are zero on every frame ("dead"), the mean feature value, and the mean spread of each
unit across frames (a unit that does not vary cannot tell the frames apart).

    python results/atari/scripts/features.py RUN_DIR [RUN_DIR ...]
"""

import itertools
import sys
from pathlib import Path

import torch
from random_play import random_steps  # random_play.py, beside this script

from fastweights.rl import load_rl_config
from fastweights.rl.actors import build_agent, env_spec
from fastweights.train.checkpoint import load_checkpoint


def frames(cfg, steps: int = 200, seed: int = 1) -> torch.Tensor:
    return torch.stack([torch.as_tensor(obs) for obs, _, _ in itertools.islice(random_steps(cfg, seed), steps)])


def describe(agent, x) -> str:
    with torch.no_grad():
        f = agent.encoder(x)
    dead = float(((f > 0).sum(0) == 0).float().mean())
    spread = float(f.std(0).mean())
    return f"dead units {100 * dead:.0f}%, mean {float(f.mean()):.2g}, spread across frames {spread:.2g}"


def main(runs) -> None:
    for run in map(Path, runs):
        cfg = load_rl_config(run)
        trained = build_agent(cfg, *env_spec(cfg))
        ptr, _ = load_checkpoint(run / "checkpoints", trained, "last")
        torch.manual_seed(cfg.seed)
        fresh = build_agent(cfg, *env_spec(cfg))
        x = frames(cfg)
        print(f"{run} ({ptr['dir']}): trained: {describe(trained, x)}; fresh: {describe(fresh, x)}")


if __name__ == "__main__":
    main(sys.argv[1:])

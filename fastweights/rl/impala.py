"""The IMPALA learner (Espeholt et al. 2018): batches actors' rollouts, computes V-trace targets and
updates the agent with RMSprop, in the training system's step loop (:mod:`fastweights.train.driver`), so
checkpoints, resume, time budgets, logging, SIGTERM and NaN stops work as in the supervised loop.

``train(cfg, resume=False)`` runs an :class:`~fastweights.rl.config.RLConfig` into ``cfg.out``::

    config.json  metrics.jsonl  tensorboard/  curves.png  summary.json  checkpoints/

Loss per batch (sums over the T x B steps, as in the IMPALA paper's implementation)::

    pg       = -sum log pi(a_t|x_t) * pg_advantage_t
    baseline = baseline_cost * 0.5 * sum (v_t - V(x_t))^2
    entropy  = entropy_cost * sum_a pi(a|x_t) log pi(a|x_t)        (minimising it raises the entropy)

The core is unrolled over the whole trajectory from the actor's stored state, and gradients flow
through every step, fast weights included (the reference FWP agents cut them).

Resume restores the weights, the optimizer, the learning-rate schedule, the step and frame counters and
the RNGs; the environments restart (episodes in progress are lost), so a resumed run is not bitwise equal
to an uninterrupted one.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..train.driver import BatchLoss, StepLoop, Task, release_run, start_run, write_run_config
from ..train.runlog import read_metrics
from ..train.runs import RunError, load_config, resume_config, run_kind
from . import vtrace
from .actors import (ActorError, ActorPool, RolloutWorker, build_agent, clip_reward, core_reward, env_spec,
                     keep_freed_memory, make_env, quiet_numba)
from .config import RLConfig

RLError = RunError


def load_rl_config(run_dir) -> RLConfig:
    return load_config(run_dir, expect="rl")


def is_rl_run(run_dir) -> bool:
    """Whether ``run_dir``'s config.json is an RL run's."""
    try:
        return run_kind(run_dir) == "rl"
    except ValueError:
        return False


def resume_rl_config(run_dir, overrides: dict) -> RLConfig:
    """The saved config with ``overrides`` (see :func:`fastweights.train.runs.resume_config`)."""
    return resume_config(run_dir, overrides)


# ------------------------------------------------------------------------------------------ the loss

def impala_loss(agent, batch: dict, cfg: RLConfig) -> tuple[torch.Tensor, dict]:
    """The IMPALA loss of one batch (see the module docstring) and its parts as floats."""
    rewards = clip_reward(batch["reward"], cfg.reward_clip)  # [T+1, B]
    core_in = core_reward(batch["reward"], batch["first"], cfg.reward_clip)
    logits, values, _ = agent.unroll(batch["obs"], core_in, batch["first"], batch["state"])
    bootstrap, values, logits = values[-1], values[:-1], logits[:-1]  # [B], [T, B], [T, B, A]
    actions = batch["action"]
    log_pi = F.log_softmax(logits, dim=-1)
    log_pi_a = log_pi.gather(-1, actions[..., None]).squeeze(-1)
    log_mu_a = F.log_softmax(batch["logits"], dim=-1).gather(-1, actions[..., None]).squeeze(-1)
    discounts = cfg.discount * (~batch["first"][1:]).to(values.dtype)
    vt = vtrace.from_importance_weights(log_pi_a.detach() - log_mu_a, discounts, rewards[1:].to(values.dtype),
                                        values.detach(), bootstrap.detach(), clip_rho_threshold=cfg.clip_rho,
                                        clip_pg_rho_threshold=cfg.clip_pg_rho)
    pg = -(log_pi_a * vt.pg_advantages).sum()
    baseline = cfg.baseline_cost * 0.5 * ((vt.vs - values) ** 2).sum()
    neg_entropy = (log_pi.exp() * log_pi).sum()
    loss = pg + baseline + cfg.entropy_cost * neg_entropy
    steps = actions.numel()
    return loss, {"pg_loss": float(pg.detach()) / steps, "baseline_loss": float(baseline.detach()) / steps,
                  "entropy": -float(neg_entropy.detach()) / steps}


# ------------------------------------------------------------------------------------------ sources

class LocalSource:
    """``actors=0``: the learner steps ``batch_size`` environments itself with the current weights."""

    def __init__(self, cfg: RLConfig, agent):
        envs = [make_env(cfg) for _ in range(cfg.batch_size)]
        self.worker = RolloutWorker(envs, agent, cfg.unroll, cfg.reward_clip, seed=cfg.seed * 10007 + 1)

    def next_batch(self) -> dict:
        return self.worker.collect()

    def close(self) -> None:
        for e in self.worker.envs:
            e.close()


class ProcessSource:
    """``actors>0``: actor processes with a shared-memory copy of the weights."""

    def __init__(self, cfg: RLConfig, agent, obs_shape, num_actions):
        self.shared = build_agent(cfg, obs_shape, num_actions)
        self.sync(agent)
        self.shared.share_memory()
        self.pool = ActorPool(cfg, self.shared)

    @torch.no_grad()
    def sync(self, agent) -> None:
        for dst, src in zip(self.shared.state_dict().values(), agent.state_dict().values()):
            dst.copy_(src)

    def next_batch(self) -> dict:
        return self.pool.next_batch()

    def close(self) -> None:
        self.pool.close()


# ------------------------------------------------------------------------------------------ training

def default_learner_threads(cfg: RLConfig) -> int:
    """The learner's torch threads when ``threads`` is None and actors run in processes.

    Atari: every core. The learner is the bottleneck there (its forward and backward pass over the batch
    cost 2-4x the actors' forward passes), so the actors spend most of their time waiting for a free
    slot, and a learner limited to the cores they leave over idles the rest: on an idle 2-core machine
    with 2 actors, 2 learner threads instead of 1 raised the system from 157 to 215 env steps/s with the
    deep encoder and left the shallow one unchanged (796 vs 787; results/atari.md, section 2). While the
    actors do run, the threads share the cores with them. Memory environment (tiny models): the cores the
    actors leave over, at least 1."""
    cores = os.cpu_count() or 1
    if cfg.env == "atari":
        return cores
    return max(1, cores - cfg.actors * cfg.actor_threads)


def train(cfg: RLConfig, resume: bool = False, progress: bool | None = None) -> dict:
    """Trains ``cfg`` into ``cfg.out`` (with ``resume``: from its last checkpoint). Returns the summary.

    The step loop is the training system's (:class:`~fastweights.train.driver.StepLoop`): time budget,
    SIGTERM, NaN stops, checkpoints and records work as in the supervised loop; the budget's CPU clock
    counts the learner process only. Raises ``ValueError`` (bad config, run directory or checkpoint) and
    :class:`RLError`."""
    run_dir, _ = start_run(cfg, resume, None, 0, 1)
    try:
        quiet_numba()
        if cfg.env == "atari":
            keep_freed_memory()
        if cfg.threads is None and cfg.actors > 0:
            torch.set_num_threads(default_learner_threads(cfg))
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        obs_shape, num_actions = env_spec(cfg)
        agent = build_agent(cfg, obs_shape, num_actions)
        opt = torch.optim.RMSprop(agent.parameters(), lr=cfg.lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps,
                                  weight_decay=cfg.weight_decay)
        total = cfg.total_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
        task = _ImpalaTask(cfg, agent, obs_shape, num_actions)
        loop = StepLoop(task, cfg, run_dir, agent, opt, sched)
        if resume:
            loop.resume()
        write_run_config(run_dir, cfg, 0, None)
        return loop.run(progress)
    finally:
        release_run(cfg.out)


class _ImpalaTask(Task):
    """The IMPALA learner's hooks for :class:`~fastweights.train.driver.StepLoop`: batches from the actors
    (or from environments the learner steps itself), the summed IMPALA loss, the new weights sent to the
    actors after each update, no validation; train records of the mean loss parts, gradient norm and the
    returns of the episodes that ended since the last record, with env steps/s, emulator frames/s and the
    fraction of the time the learner waited for rollouts."""

    name = "rl"
    error = RLError
    epoch = None
    validates = False

    def __init__(self, cfg: RLConfig, agent, obs_shape, num_actions: int):
        self.cfg, self.agent, self.obs_shape, self.num_actions = cfg, agent, obs_shape, num_actions
        self.total = cfg.total_steps
        self.frames, self.episodes = 0, 0
        self.source = None
        self.n_params = sum(p.numel() for p in agent.parameters())

    # -- the run
    def start(self) -> None:
        self.source = (LocalSource(self.cfg, self.agent) if self.cfg.actors == 0
                       else ProcessSource(self.cfg, self.agent, self.obs_shape, self.num_actions))

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def run_log_options(self) -> dict:
        return {"formatter": format_record, "plotter": plot_curves}

    # -- one step
    def next_batch(self):
        t0 = time.time()
        try:
            batch = self.source.next_batch()
        except ActorError as e:
            raise RLError(str(e)) from None
        batch["wait_s"] = time.time() - t0
        return batch

    def forward(self, batch) -> BatchLoss:
        loss, parts = impala_loss(self.agent, batch, self.cfg)
        self.frames += batch["env_frames"] if self.cfg.env == "atari" else self.cfg.batch_size * self.cfg.unroll
        self.episodes += len(batch["episodes"])
        sums = {"updates": 1, "tokens": batch["action"].numel(), "wait_s": batch["wait_s"], **parts,
                "episodes": len(batch["episodes"]), "return_sum": sum(e[0] for e in batch["episodes"]),
                "length_sum": sum(e[1] for e in batch["episodes"]),
                "success_n": sum(e[2] is not None for e in batch["episodes"]),
                "success_sum": sum(float(e[2]) for e in batch["episodes"] if e[2] is not None)}
        return BatchLoss(loss, batch["action"].numel(), sums)

    def scale(self, loss_sum, global_count):
        return loss_sum  # the IMPALA loss is a sum over the T x B steps, not a mean

    def after_update(self, loss: BatchLoss) -> None:
        if isinstance(self.source, ProcessSource):
            self.source.sync(self.agent)

    # -- metrics
    def zero_accum(self) -> dict:
        return {"loss_sum": 0.0, "grad_norm_sum": 0.0, "updates": 0, "tokens": 0, "wait_s": 0.0, "pg_loss": 0.0,
                "baseline_loss": 0.0, "entropy": 0.0, "episodes": 0, "return_sum": 0.0, "length_sum": 0.0,
                "success_n": 0, "success_sum": 0.0}

    def train_metrics(self, totals: dict) -> dict:
        n, eps = max(totals["updates"], 1), totals["episodes"]
        out = {"frames": self.frames, "episodes_total": self.episodes, "loss": totals["loss_sum"] / n,
               **{k: totals[k] / n for k in ("pg_loss", "baseline_loss", "entropy")},
               "grad_norm": totals["grad_norm_sum"] / n, "episodes": eps,
               "return_mean": totals["return_sum"] / eps if eps else None,
               "episode_length": totals["length_sum"] / eps if eps else None}
        if totals["success_n"]:
            out["success"] = totals["success_sum"] / totals["success_n"]
        return out

    def rates(self, sums: dict, seconds: float) -> dict:
        seconds = max(seconds, 1e-9)
        skip = self.cfg.frame_skip if self.cfg.env == "atari" else 1
        return {"env_steps_per_s": sums["tokens"] / seconds, "frames_per_s": sums["tokens"] * skip / seconds,
                "learner_wait_frac": sums["wait_s"] / seconds}

    # -- checkpoints
    def checkpoint_state(self) -> dict:
        return {"frames": self.frames, "episodes": self.episodes}

    def restore(self, state: dict, ckpt_root: Path) -> None:
        self.frames, self.episodes = int(state["frames"]), int(state["episodes"])

    # -- messages and summary
    def describe(self) -> str:
        cfg = self.cfg
        return (f"IMPALA on {cfg.env_name()}, encoder {cfg.encoder}, core {cfg.core} ({self.n_params:,} "
                f"parameters), {cfg.frames:,} frames = {self.total} steps of {cfg.batch_size}x{cfg.unroll}, "
                f"{cfg.actors} actor process(es)")

    def describe_end(self, summary: dict, best) -> str:
        return f", {self.frames:,} frames in {summary['seconds_this_session']:.0f} s"

    def summary(self, summary: dict, train_seconds: float) -> dict:
        summary = {k: v for k, v in summary.items() if k not in ("world_size", "best_step", "best_valid")}
        summary.update(frames=self.frames, episodes=self.episodes)
        recent = [r for r in read_metrics(self.cfg.out) if r.get("split") == "train"
                  and r.get("return_mean") is not None]
        if recent:
            summary["last_return_mean"] = recent[-1]["return_mean"]
            if recent[-1].get("success") is not None:
                summary["last_success"] = recent[-1]["success"]
        return summary


def format_record(rec: dict) -> str:
    parts = []
    if rec.get("frames") is not None:
        parts.append(f"frames {rec['frames']:,}")
    if rec.get("return_mean") is not None:
        parts.append(f"return {rec['return_mean']:.2f} ({rec.get('episodes', 0)} ep)")
    if rec.get("success") is not None:
        parts.append(f"success {100 * rec['success']:.1f}%")
    if rec.get("loss") is not None:
        parts.append(f"loss {rec['loss']:.3f}")
    if rec.get("entropy") is not None:
        parts.append(f"entropy {rec['entropy']:.3f}")
    if rec.get("env_steps_per_s"):
        parts.append(f"{rec['env_steps_per_s']:,.0f} env steps/s")
    return " | ".join(parts)


def plot_curves(history: list[dict], path, title: str) -> None:
    """Episode return (and success) against frames, and the loss parts against frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in history if r.get("split") == "train"]
    fig, (ax_ret, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    pts = [(r["frames"], r["return_mean"]) for r in recs if r.get("return_mean") is not None]
    if pts:
        ax_ret.plot(*zip(*pts), "-", label="mean episode return")
    succ = [(r["frames"], r["success"]) for r in recs if r.get("success") is not None]
    if succ:
        ax_ret.plot(*zip(*succ), "-", label="success rate")
    ax_ret.set_xlabel("environment frames")
    ax_ret.set_ylabel("return (raw)")
    for key in ("pg_loss", "baseline_loss", "entropy"):
        pts = [(r["frames"], r[key]) for r in recs if r.get(key) is not None]
        if pts:
            ax_loss.plot(*zip(*pts), "-", label=key)
    ax_loss.set_xlabel("environment frames")
    ax_loss.set_ylabel("per step")
    for ax in (ax_ret, ax_loss):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

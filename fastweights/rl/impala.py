"""The IMPALA learner (Espeholt et al. 2018): batches actors' rollouts, computes V-trace targets and
updates the agent with RMSprop; checkpoints, resume, logging, SIGTERM and NaN stops as in the supervised
loop (:mod:`fastweights.train`).

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

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json_atomic
from ..train.common import Budget, StopSignals, capture_rng, diverged_message, restore_rng
from . import vtrace
from .actors import (ActorPool, RolloutWorker, build_agent, clip_reward, core_reward, env_spec,
                     keep_freed_memory, make_env, quiet_numba)
from .config import RLConfig, RLConfigError

CONFIG = "config.json"
SUMMARY = "summary.json"
CKPT = "checkpoints"
RESUMABLE_OVERRIDES = ("frames", "log_interval", "save_interval", "time_budget_minutes", "actors",
                       "envs_per_actor", "queue_size", "threads", "actor_threads")


class RLError(RuntimeError):
    """The run cannot go on (a NaN loss or gradient, or a dead actor): the message says why."""


def load_rl_config(run_dir) -> RLConfig:
    import json

    path = Path(run_dir) / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise ValueError(f"{run_dir}: not a training run (no readable {CONFIG})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return RLConfig.from_dict(data)


def is_rl_run(run_dir) -> bool:
    """Whether ``run_dir``'s config.json is an RL run's."""
    import json

    try:
        data = json.loads((Path(run_dir) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == "rl"


def resume_rl_config(run_dir, overrides: dict) -> RLConfig:
    """The saved config with ``overrides``; only the length, intervals, budget and system knobs may change."""
    import dataclasses

    saved = load_rl_config(run_dir)
    changes = {}
    for name, value in overrides.items():
        if getattr(saved, name) == value:
            continue
        if name not in RESUMABLE_OVERRIDES:
            raise RLConfigError(name, f"cannot change {name} on resume: the run has {getattr(saved, name)!r}, "
                                      f"got {value!r}")
        changes[name] = value
    if "actors" in changes and "envs_per_actor" not in changes:
        changes["envs_per_actor"] = None
    return dataclasses.replace(saved, **changes) if changes else saved


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
    actors do run, the threads share the cores with them. Memory environment (tiny models): the cores the actors leave over, at least 1."""
    cores = os.cpu_count() or 1
    if cfg.env == "atari":
        return cores
    return max(1, cores - cfg.actors * cfg.actor_threads)


def train(cfg: RLConfig, resume: bool = False, progress: bool | None = None) -> dict:
    """Trains ``cfg`` into ``cfg.out`` (with ``resume``: from its last checkpoint). Returns the summary.

    Raises ``ValueError`` (bad config, run directory or checkpoint) and :class:`RLError`."""
    from .actors import ActorError
    from ..train.runlog import RunLog

    run_dir = Path(cfg.out)
    if not resume and (run_dir / CONFIG).exists():
        raise RLConfigError("out", f"out {run_dir} already holds a run; resume it or choose another directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RLConfigError("out", f"out: cannot create {run_dir}: {e.strerror or e}") from None
    quiet_numba()
    if cfg.env == "atari":
        keep_freed_memory()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    elif cfg.actors > 0:
        torch.set_num_threads(default_learner_threads(cfg))
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    obs_shape, num_actions = env_spec(cfg)
    agent = build_agent(cfg, obs_shape, num_actions)
    opt = torch.optim.RMSprop(agent.parameters(), lr=cfg.lr, alpha=cfg.rms_alpha, eps=cfg.rms_eps)
    total = cfg.total_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    ckpt_root = run_dir / CKPT
    step, frames, episodes_done, elapsed_before = 0, 0, 0, 0.0
    if resume:
        loaded = load_checkpoint(ckpt_root, agent, "last")
        if loaded is not None:
            _, st = loaded
            try:
                opt.load_state_dict(st["optimizer"])
                sched.load_state_dict(st["scheduler"])
                step, frames, episodes_done = int(st["step"]), int(st["frames"]), int(st["episodes"])
                elapsed_before = float(st.get("elapsed_s", 0.0))
                restore_rng(st["rng"])
            except (KeyError, ValueError, TypeError, RuntimeError) as e:
                raise CheckpointError(f"checkpoint in {ckpt_root} does not fit this run ({e})") from None
    write_json_atomic(run_dir / CONFIG, cfg.to_dict())
    total = max(total, step)

    log = RunLog(run_dir, "rl", total, step, progress, formatter=format_record, plotter=plot_curves)
    n_params = sum(p.numel() for p in agent.parameters())
    log.message(f"{'resuming at step ' + str(step) if step else 'starting'}: IMPALA on {cfg.env_name()}, encoder "
                f"{cfg.encoder}, core {cfg.core} ({n_params:,} parameters), {cfg.frames:,} frames = {total} steps "
                f"of {cfg.batch_size}x{cfg.unroll}, {cfg.actors} actor process(es), run dir {run_dir}")
    budget = Budget(cfg.time_budget_minutes, cfg.budget_clock, elapsed_before)
    source = None
    status, stopped = "completed", None
    t_start = time.time()
    window = _Window()

    def save():
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": capture_rng(),
                 "frames": frames, "episodes": episodes_done, "elapsed_s": budget.elapsed()}
        save_checkpoint(ckpt_root, agent, state, step, ("last",))

    try:
        with StopSignals() as signals:
            source = (LocalSource(cfg, agent) if cfg.actors == 0
                      else ProcessSource(cfg, agent, obs_shape, num_actions))
            window.reset()
            while step < total:
                if budget.spent():
                    stopped = "time budget"
                    log.message(f"time budget of {cfg.time_budget_minutes:g} min spent at step {step}; continue "
                                f"with --resume and a larger --time-budget")
                    break
                t0 = time.time()
                try:
                    batch = source.next_batch()
                except ActorError as e:
                    raise RLError(str(e)) from None
                t1 = time.time()
                loss, parts = impala_loss(agent, batch, cfg)
                if os.environ.get("FASTWEIGHTS_FAULT", "") == f"nan-at-step:{step + 1}":
                    loss = loss * float("nan")
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    raise RLError(diverged_message(step + 1, "loss", loss_value, ckpt_root))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(agent.parameters(), cfg.grad_clip or float("inf"))
                if not math.isfinite(float(gnorm)):
                    raise RLError(diverged_message(step + 1, "gradient norm", float(gnorm), ckpt_root))
                opt.step()
                sched.step()
                if isinstance(source, ProcessSource):
                    source.sync(agent)
                step += 1
                frames += batch["env_frames"] if cfg.env == "atari" else cfg.batch_size * cfg.unroll
                episodes_done += len(batch["episodes"])
                window.add(batch, loss_value, parts, float(gnorm), t1 - t0, time.time() - t1, cfg)
                last = step >= total
                log.step(step, window.summary())
                if step % cfg.log_interval == 0 or last:
                    log.record({"step": step, "split": "train", "frames": frames, "episodes_total": episodes_done,
                                "lr": sched.get_last_lr()[0], **window.summary()})
                    window.reset()
                if step % cfg.save_interval == 0 or last:
                    save()
                    log.plot()
                if signals.received is not None:
                    save()
                    log.plot()
                    status, stopped = "stopped", signals.received
                    log.message(f"stopped by {signals.received} at step {step}: checkpoint saved in {ckpt_root}; "
                                f"continue with --resume")
                    break
            if stopped == "time budget":
                save()
                log.plot()
        summary = {"status": status, "stopped": stopped, "step": step, "total_steps": total, "frames": frames,
                   "episodes": episodes_done, "seconds_this_session": round(time.time() - t_start, 2),
                   "train_seconds": round(budget.elapsed(), 2), "budget_clock": cfg.budget_clock,
                   "time_budget_minutes": cfg.time_budget_minutes}
        recent = [r for r in log.history if r.get("split") == "train" and r.get("return_mean") is not None]
        if recent:
            summary["last_return_mean"] = recent[-1]["return_mean"]
            if recent[-1].get("success") is not None:
                summary["last_success"] = recent[-1]["success"]
        write_json_atomic(run_dir / SUMMARY, summary)
        if status == "completed" and stopped is None:
            log.message(f"done: {step} steps, {frames:,} frames in {summary['seconds_this_session']:.0f} s; "
                        f"run dir {run_dir}")
        return summary
    finally:
        if source is not None:
            source.close()
        log.close()


class _Window:
    """Training metrics accumulated between two records."""

    def reset(self):
        self.t0 = time.time()
        self.steps, self.env_steps, self.loss, self.gnorm = 0, 0, 0.0, 0.0
        self.parts = {}
        self.returns, self.lengths, self.successes = [], [], []
        self.wait_s = self.learn_s = 0.0

    def add(self, batch, loss, parts, gnorm, wait_s, learn_s, cfg):
        self.steps += 1
        self.env_steps += batch["action"].numel()
        self.loss += loss
        self.gnorm += gnorm
        for k, v in parts.items():
            self.parts[k] = self.parts.get(k, 0.0) + v
        for ret, length, success in batch["episodes"]:
            self.returns.append(ret)
            self.lengths.append(length)
            if success is not None:
                self.successes.append(float(success))
        self.wait_s += wait_s
        self.learn_s += learn_s
        self.frame_skip = cfg.frame_skip

    def summary(self) -> dict:
        n = max(self.steps, 1)
        dt = max(time.time() - self.t0, 1e-9)
        out = {"loss": self.loss / n, **{k: v / n for k, v in self.parts.items()}, "grad_norm": self.gnorm / n,
               "env_steps_per_s": self.env_steps / dt,
               "frames_per_s": self.env_steps * getattr(self, "frame_skip", 1) / dt,
               "learner_wait_frac": self.wait_s / dt, "episodes": len(self.returns),
               "return_mean": float(np.mean(self.returns)) if self.returns else None,
               "episode_length": float(np.mean(self.lengths)) if self.lengths else None}
        if self.successes:
            out["success"] = float(np.mean(self.successes))
        return out


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

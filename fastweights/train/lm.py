"""Language modelling on WikiText-103: the training loop, evaluation (sliding window or carried state),
generation, and the unigram baseline.

``train_lm(cfg)`` runs one :class:`~fastweights.train.lm_config.LMConfig` into ``cfg.out``, with the run
directory, checkpoints, resume, NaN stop, SIGTERM and time budget of the supervised loop (the shared pieces
come from :mod:`.common`, :mod:`.checkpoint` and :mod:`.runlog`).

Data order. The training ids are cut into ``batch_size`` contiguous streams (the standard "batchify"); step
``s`` of an epoch reads segment ``s`` of every stream: inputs ``[B, segment_len]`` and the targets one word
later. With ``carry_state`` each segment starts from the previous segment's final state, detached; the state
restarts at every epoch. The order is the same in every epoch and the checkpoint stores the position, the
carried state (per process), every RNG, the optimizer and the scheduler, so on CPU with the same thread
count a resumed run's losses equal an uninterrupted run's bit for bit. Under ``torchrun`` each process
takes ``batch_size / world`` of the streams; DDP wraps a small loss module from outside the model.

Evaluation (:func:`evaluate_lm`). The scored text is a split's ids ``w_1..w_N``; word ``w_i`` is predicted
from ``<eos>, w_1..w_{i-1}`` (the leading ``<eos>`` stands for the line before the split), so all N words are
scored (217,646 on the validation set) and perplexity is ``exp(total NLL / N)``.

* ``mode="window"``: windows of ``window`` words moved by ``stride`` (<= window); each window starts from a
  fresh state and scores only the words no earlier window scored (the last ``stride`` words; the first
  window all of them), so every word is scored exactly once with at least ``window - stride`` words of
  context. ``stride == window`` gives independent segments; ``window >= N`` one pass over everything.
* ``mode="carry"``: the text is read ``window`` words at a time carrying the state across the whole split
  (``batch_size`` > 1 cuts it into that many contiguous parts, each starting afresh).
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import _faults
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json_atomic
from .common import (Budget, StopSignals, capture_rng, config_changes, device_for_rank, diverged_message,
                     gather_from_ranks, init_distributed, read_run_config, restore_rng, share_best)
from .lm_config import LMConfig, LMConfigError

CONFIG = "config.json"
SUMMARY = "summary.json"
CKPT = "checkpoints"
TASK = "lm"
RESUMABLE_OVERRIDES = ("eval_interval", "save_interval", "log_interval", "time_budget_minutes", "eval_tokens",
                       "eval_batch_size", "cache_dir")
EVAL_MODES = ("window", "carry")


class LMTrainError(RuntimeError):
    """The run cannot go on (a NaN/inf loss or gradient): the message says why and what was kept."""


# ------------------------------------------------------------------------------------------ config and data

def is_lm_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a language-model run (its ``config.json`` says ``"task": "lm"``)."""
    try:
        return read_run_config(run_dir, CONFIG).get("task") == TASK
    except (ValueError, AttributeError):
        return False


def load_lm_config(run_dir: str | os.PathLike) -> LMConfig:
    return LMConfig.from_dict(read_run_config(run_dir, CONFIG))


def resume_lm_config(run_dir: str | os.PathLike, overrides: dict) -> LMConfig:
    """The saved config of ``run_dir`` with ``overrides``; only the intervals, the evaluation size, the
    cache and the time budget may change (the cosine schedule is fixed by ``steps``)."""
    saved = load_lm_config(run_dir)
    changes = config_changes(saved, overrides, RESUMABLE_OVERRIDES, LMConfigError)
    return dataclasses.replace(saved, **changes) if changes else saved


def load_corpus_for(cfg: LMConfig, log=None):
    """The run's corpus; refuses data whose checksums differ from those the run recorded."""
    from ..tasks.wikitext import WikiTextError, load_corpus

    try:
        corpus = load_corpus(cfg.data_dir, cfg.train_file, cfg.cache_dir, log=log)
    except WikiTextError as e:
        field = "train_file" if cfg.train_file and str(cfg.train_file) in str(e) else "data_dir"
        raise LMConfigError(field, str(e)) from None
    if cfg.data_sha256 is not None and corpus.meta["sha256"] != cfg.data_sha256:
        changed = [s for s in cfg.data_sha256 if corpus.meta["sha256"].get(s) != cfg.data_sha256[s]]
        raise LMConfigError("data_dir", f"the data files changed since this run started ({', '.join(changed)} "
                                        f"differ from the checksums in its config.json)")
    return corpus


def stream_matrix(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """``ids`` [N] -> ``[batch_size, N // batch_size]``: contiguous streams (a view of a memory map)."""
    L = len(ids) // batch_size
    return np.asarray(ids[: L * batch_size]).reshape(batch_size, L)


class _LossModule(nn.Module):
    """``forward(ids, targets, state) -> (summed NLL, new state)``, so that DDP (applied to this wrapper
    from outside) sees the language-model loss as a forward call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, targets, state=None):
        return self.model.lm_loss(ids, targets, state, reduction="sum")


def make_scheduler(opt, warmup_steps: int, total_steps: int, min_lr: float = 0.0):
    """Linear warm-up over ``warmup_steps`` (``LinearLR`` from 1/warmup of the rate), then cosine decay to
    ``min_lr`` at ``total_steps`` (``CosineAnnealingLR``), chained by ``SequentialLR``."""
    sched = torch.optim.lr_scheduler
    cosine = sched.CosineAnnealingLR(opt, T_max=max(1, total_steps - warmup_steps), eta_min=min_lr)
    if warmup_steps == 0:
        return cosine
    warm = sched.LinearLR(opt, start_factor=1.0 / warmup_steps, end_factor=1.0, total_iters=warmup_steps)
    return sched.SequentialLR(opt, [warm, cosine], milestones=[warmup_steps])


# ------------------------------------------------------------------------------------------ evaluation

def _scored_stream(ids: np.ndarray, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) [N]: inputs ``<eos>, w_1..w_{N-1}``, targets ``w_1..w_N``."""
    tgt = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    inp = torch.cat([torch.tensor([eos_id], dtype=torch.long), tgt[:-1]])
    return inp, tgt


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first scored)`` of every window over ``n`` words: positions ``[begin, end)`` are fed,
    ``[first scored, end)`` scored; the scored ranges tile ``[0, n)`` exactly once."""
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window {window}, stride {stride}")
    spans, prev_end, begin = [], 0, 0
    while prev_end < n:
        end = min(begin + window, n)
        spans.append((begin, end, prev_end))
        prev_end = end
        begin += stride
    return spans


@torch.no_grad()
def evaluate_lm(model, ids: np.ndarray, eos_id: int, mode: str = "window", window: int = 256,
                stride: int | None = None, batch_size: int = 16, device="cpu") -> dict:
    """Word-level NLL and perplexity of ``model`` on ``ids`` (see the module doc for the modes).
    Returns ``{"mode", "tokens", "loss", "perplexity", "window", "stride", "seconds"}``."""
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {list(EVAL_MODES)}, got {mode!r}")
    n = len(ids)
    if n == 0:
        raise ValueError("nothing to score: the split is empty")
    t0 = time.perf_counter()
    inp, tgt = _scored_stream(ids, eos_id)
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        if mode == "window":
            stride = window if stride is None else stride
            spans = window_spans(n, window, stride)
            full = [s for s in spans if s[1] - s[0] == window]
            rest = [s for s in spans if s[1] - s[0] != window]
            groups = [full[i:i + batch_size] for i in range(0, len(full), batch_size)] + [[s] for s in rest]
            for group in groups:
                x = torch.stack([inp[b:e] for b, e, _ in group]).to(device)
                y = torch.stack([tgt[b:e] for b, e, _ in group]).clone()
                for row, (b, _, first) in enumerate(group):
                    y[row, : first - b] = -100
                loss, _ = model.lm_loss(x, y.to(device), reduction="sum")
                total += float(loss)
                count += int((y != -100).sum())
        else:
            stride = None
            rows = max(1, min(batch_size, n))
            part = -(-n // rows)
            pad = part * rows - n
            x = torch.cat([inp, torch.full((pad,), eos_id, dtype=torch.long)]).view(rows, part)
            y = torch.cat([tgt, torch.full((pad,), -100, dtype=torch.long)]).view(rows, part)
            state = None
            for s in range(0, part, window):
                yy = y[:, s:s + window]
                loss, state = model.lm_loss(x[:, s:s + window].to(device), yy.to(device), state, reduction="sum")
                total += float(loss)
                count += int((yy != -100).sum())
    finally:
        model.train(was)
    assert count == n, (count, n)  # internal invariant: every word scored once
    loss = total / n
    return {"mode": mode, "tokens": n, "loss": loss, "perplexity": math.exp(min(loss, 700.0)), "window": window,
            "stride": stride, "seconds": round(time.perf_counter() - t0, 3)}


def unigram_perplexity(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int, alpha: float = 1.0) -> dict:
    """Perplexity of the add-``alpha`` unigram distribution of the training ids on ``eval_ids`` (same
    vocabulary; ``<eos>`` counts as a word, as in the models' perplexity)."""
    counts = np.bincount(np.asarray(train_ids), minlength=vocab_size).astype(np.float64) + alpha
    logp = np.log(counts) - math.log(counts.sum())
    nll = -float(logp[np.asarray(eval_ids)].mean())
    return {"tokens": int(len(eval_ids)), "loss": nll, "perplexity": math.exp(nll), "alpha": alpha}


# ------------------------------------------------------------------------------------------ training

def train_lm(cfg: LMConfig, resume: bool = False, progress: bool | None = None) -> dict:
    """Runs ``cfg`` into ``cfg.out``; with ``resume`` continues from its last checkpoint (a fresh start if
    it has none). Returns the summary (also written to ``RUN_DIR/summary.json``).

    Raises ``ValueError`` (bad config, data, checkpoint) and :class:`LMTrainError` (divergence)."""
    dist, rank, world = init_distributed()
    try:
        return _train(cfg, resume, progress, dist, rank, world)
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: LMConfig, resume, progress, dist, rank, world) -> dict:
    from ..layers.state import detach_state
    from ..models import build_model
    from .runlog import RunLog

    run_dir = Path(cfg.out)
    if cfg.batch_size % world:
        raise LMConfigError("batch_size", f"batch_size ({cfg.batch_size}) must be divisible by the number of "
                                          f"processes ({world})")
    if not resume and (run_dir / CONFIG).exists():
        raise LMConfigError("out", f"out {run_dir} already holds a run; resume it or choose another directory")
    if dist is not None:
        dist.barrier()  # every rank has checked the run directory before rank 0 writes into it
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = device_for_rank(rank)
    if rank == 0:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LMConfigError("out", f"out: cannot create {run_dir}: {e.strerror or e}") from None
    if rank == 0:  # rank 0 builds the token cache (if it is cold) before the other ranks read it
        corpus = load_corpus_for(cfg, log=_stderr_log)
    if dist is not None:
        dist.barrier()
    if rank != 0:
        corpus = load_corpus_for(cfg)
    V = len(corpus.vocab)
    cfg = dataclasses.replace(cfg, vocab_size=V, cutoffs=cfg.resolved_cutoffs(V) or [],
                              data_sha256=dict(corpus.meta["sha256"]))
    streams = stream_matrix(corpus.train, cfg.batch_size)
    S = cfg.segment_len
    per_epoch = (streams.shape[1] - 1) // S
    if per_epoch < 1:
        raise LMConfigError("segment_len", f"the training text ({len(corpus.train)} words) is too short for "
                                           f"batch_size {cfg.batch_size} x segment_len {S}")
    local = cfg.batch_size // world
    rows = slice(rank * local, (rank + 1) * local)
    valid_ids = corpus.valid if not cfg.eval_tokens else corpus.valid[: cfg.eval_tokens]
    if rank == 0:
        write_json_atomic(run_dir / CONFIG, cfg.to_dict())
    if dist is not None:
        dist.barrier()

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(cfg.model_config()).to(device)
    if rank > 0:  # every process starts from rank 0's weights; dropout streams differ per process
        torch.manual_seed(cfg.seed * 7919 + rank)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    sched = make_scheduler(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr)
    total = cfg.steps

    ckpt_root = run_dir / CKPT
    step, epoch, seg, best, elapsed_before, carried = 0, 0, 0, None, 0.0, None
    accum = _zero_accum()
    if resume:
        loaded = load_checkpoint(ckpt_root, model, "last", map_location=device)
        if loaded is not None:
            _, st = loaded
            try:
                opt.load_state_dict(st["optimizer"])
                sched.load_state_dict(st["scheduler"])
                step, epoch, seg = int(st["step"]), int(st["epoch"]), int(st["segment"])
                best, accum = st["best"], dict(st["accum"])
                elapsed_before = float(st.get("elapsed_s", 0.0))
                rngs, carries = st["rng"], st["carry"]
                restore_rng(rngs[rank] if len(rngs) == world else rngs[0])
                carried = carries[rank] if len(carries) == world else None
            except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
                raise CheckpointError(f"checkpoint in {ckpt_root} does not fit this run ({e})") from None
            if seg > per_epoch:
                raise CheckpointError(f"checkpoint in {ckpt_root}: data position {seg} is past the epoch's "
                                      f"{per_epoch} segments")
            if carried is not None:
                carried = _to_device(carried, device)

    loss_module = _LossModule(model)
    if dist is not None:
        loss_module = nn.parallel.DistributedDataParallel(loss_module, device_ids=[device.index]
                                                          if device.type == "cuda" else None,
                                                          find_unused_parameters=True)
    log = None
    if rank == 0:
        log = RunLog(run_dir, TASK, total, step, progress)
        budget_text = (f" within {cfg.time_budget_minutes:g} {cfg.budget_clock} min" if cfg.time_budget_minutes
                       else "")
        log.message(f"{'resuming at step ' + str(step) if step else 'starting'}: language model {cfg.model} "
                    f"(preset {cfg.preset}, {sum(p.numel() for p in model.parameters()):,} parameters), vocabulary "
                    f"{V:,}, {len(corpus.train):,} training words, {total} steps of {cfg.batch_size} x {S} words"
                    f"{' carrying the state' if cfg.carry_state else ''}"
                    f"{f' on {world} processes' if world > 1 else ''}"
                    f"{budget_text}"
                    f", run dir {run_dir}")
    status, t_last, t_start = "completed", time.time(), time.time()
    budget = Budget(cfg.time_budget_minutes, cfg.budget_clock, elapsed_before, dist)
    elapsed = budget.elapsed
    out_of_time = step < total and budget.spent()
    if out_of_time and log is not None:
        log.message(f"time budget of {cfg.time_budget_minutes:g} min already spent ({elapsed_before / 60:.2f} min "
                    f"at step {step}); nothing to do (raise it with --time-budget)")

    def save(pointers):
        rngs = gather_from_ranks(dist, world, capture_rng())
        carries = gather_from_ranks(dist, world, _to_device(carried, "cpu"))
        if rank == 0:
            state = {"epoch": epoch, "segment": seg, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "rng": rngs, "carry": carries, "best": best, "accum": accum, "world_size": world,
                     "threads": torch.get_num_threads(), "elapsed_s": elapsed()}
            save_checkpoint(ckpt_root, model, state, step, pointers)
        if dist is not None:
            dist.barrier()

    try:
        with StopSignals() as signals:
            while step < total and status == "completed" and not out_of_time:
                if seg >= per_epoch:
                    epoch, seg, carried = epoch + 1, 0, None
                chunk = torch.from_numpy(np.array(streams[rows, seg * S: seg * S + S + 1], dtype=np.int64))
                ids, targets = chunk[:, :-1].to(device), chunk[:, 1:].to(device)
                loss_sum, new_state = loss_module(ids, targets, carried if cfg.carry_state else None)
                if _faults.active("nan-at-step", step + 1):
                    loss_sum = loss_sum * float("nan")
                loss_value = float(loss_sum.detach())
                flags = torch.tensor([float(signals.received is not None), float(not math.isfinite(loss_value))],
                                     dtype=torch.float64)
                if dist is not None:
                    dist.all_reduce(flags)
                if flags[1] > 0:
                    raise LMTrainError(diverged_message(step + 1, "loss", loss_value, ckpt_root))
                loss = loss_sum / (local * S)  # DDP averages the gradients: the mean over the global batch
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip else float("inf"))
                if not math.isfinite(float(gnorm)):
                    raise LMTrainError(diverged_message(step + 1, "gradient norm", float(gnorm), ckpt_root))
                opt.step()
                sched.step()
                carried = detach_state(new_state) if cfg.carry_state else None
                step += 1
                seg += 1
                accum["loss_sum"] += loss_value
                accum["tokens"] += local * S
                out_of_time = step < total and budget.spent()
                last = step == total or out_of_time
                if log is not None:
                    log.step(step, {"loss": accum["loss_sum"] / max(accum["tokens"], 1),
                                    "tokens_per_s": accum["tokens"] * world / max(time.time() - t_last, 1e-9)})
                if step % cfg.log_interval == 0 or last:
                    totals = dict(accum)
                    if dist is not None:
                        keys = sorted(totals)
                        vec = torch.tensor([float(totals[k]) for k in keys], dtype=torch.float64)
                        dist.all_reduce(vec)
                        totals = dict(zip(keys, vec.tolist()))
                    now = time.time()
                    if log is not None:
                        mean = totals["loss_sum"] / max(totals["tokens"], 1)
                        log.record({"step": step, "split": "train", "loss": mean, "ppl": math.exp(min(mean, 700.0)),
                                    "lr": sched.get_last_lr()[0], "epoch": epoch,
                                    "tokens_per_s": totals["tokens"] / max(now - t_last, 1e-9),
                                    "train_seconds": round(elapsed(), 3)})
                    accum, t_last = _zero_accum(), now
                evaluating = step % cfg.eval_interval == 0 or last
                if evaluating:
                    pointers = ["last"]
                    if rank == 0:
                        m = evaluate_lm(model, valid_ids, corpus.eos_id, "carry" if cfg.carry_state else "window",
                                        window=S, batch_size=cfg.eval_batch_size, device=device)
                        log.record({"step": step, "split": "valid", "loss": m["loss"], "ppl": m["perplexity"],
                                    "tokens": m["tokens"], "train_seconds": round(elapsed(), 3)})
                        log.plot()
                        if best is None or m["loss"] < best["loss"]:
                            best = {"step": step, "loss": m["loss"], "ppl": m["perplexity"]}
                            pointers.append("best")
                    best, pointers = share_best(dist, best, step, pointers)
                    save(pointers)
                    t_last = time.time()
                elif cfg.save_interval and step % cfg.save_interval == 0:
                    save(["last"])
                    t_last = time.time()
                _faults.maybe_kill("kill-at-step", step)
                if flags[0] > 0 or signals.received is not None:
                    if not evaluating:
                        save(["last"])
                    status = "stopped"
                    if log is not None:
                        log.message(f"stopped by {signals.received or 'a signal'} at step {step}: checkpoint "
                                    f"saved in {ckpt_root}; continue with --resume")
                    break
                if out_of_time and log is not None:
                    log.message(f"time budget of {cfg.time_budget_minutes:g} min spent at step {step} of {total}; "
                                f"continue with --resume and a larger --time-budget")
        stopped = (signals.received or "a signal") if status == "stopped" else "time budget" if out_of_time else None
        train_s = elapsed()
        summary = {"status": status, "stopped": stopped, "step": step, "total_steps": total, "world_size": world,
                   "best_step": best["step"] if best else None, "best_valid": best,
                   "train_words": step * cfg.batch_size * S, "epochs": round(step / per_epoch, 3),
                   "seconds_this_session": round(time.time() - t_start, 2), "train_seconds": round(train_s, 2),
                   "words_per_s": round(step * cfg.batch_size * S / max(train_s, 1e-9), 1),
                   "budget_clock": cfg.budget_clock, "time_budget_minutes": cfg.time_budget_minutes,
                   "vocab_size": V, "parameters": sum(p.numel() for p in model.parameters())}
        if rank == 0:
            write_json_atomic(run_dir / SUMMARY, summary)
            if status == "completed" and best:
                log.message(f"done: {step} steps; best valid perplexity {best['ppl']:.2f} (first "
                            f"{len(valid_ids):,} words) at step {best['step']}; run dir {run_dir}")
        return summary
    finally:
        if log is not None:
            log.close()


def _stderr_log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _zero_accum() -> dict:
    return {"loss_sum": 0.0, "tokens": 0}


def _to_device(state, device):
    from ..layers.state import map_state

    return map_state(state, lambda t: t.to(device))


# ------------------------------------------------------------------------------------------ runs

def load_lm_run(run_dir: str | os.PathLike, which: str = "best", log=None):
    """``(cfg, model in eval mode, corpus, pointer)`` of a language-model run's ``which`` checkpoint."""
    from ..models import build_model

    run_dir = Path(run_dir)
    cfg = load_lm_config(run_dir)
    corpus = load_corpus_for(cfg, log=log)
    model = build_model(cfg.model_config())
    loaded = load_checkpoint(run_dir / CKPT, model, which)
    if loaded is None:
        raise CheckpointError(f"{run_dir}: no {which} checkpoint yet (no {CKPT}/{which}.json)")
    model.eval()
    return cfg, model, corpus, loaded[0]


def evaluate_lm_run(run_dir: str | os.PathLike, split: str = "test", which: str = "best", mode: str = "window",
                    window: int | None = None, stride: int | None = None, batch_size: int | None = None,
                    threads: int | None = None) -> dict:
    """Word-level perplexity of a run's ``which`` checkpoint on ``split`` (see :func:`evaluate_lm`; the
    window defaults to the training segment length, the stride to half of it)."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"--split must be train, valid or test, got {split!r}")
    if mode not in EVAL_MODES:
        raise ValueError(f"--mode must be one of {list(EVAL_MODES)}, got {mode!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    cfg, model, corpus, ptr = load_lm_run(run_dir, which)
    window = cfg.segment_len if window is None else window
    if window < 1:
        raise ValueError(f"--window must be a positive integer, got {window}")
    if mode == "window":
        stride = max(1, window // 2) if stride is None else stride
        if not 1 <= stride <= window:
            raise ValueError(f"--stride must be in 1..window ({window}), got {stride}")
    batch = cfg.eval_batch_size if batch_size is None else batch_size
    if batch < 1:
        raise ValueError(f"--batch-size must be a positive integer, got {batch}")
    m = evaluate_lm(model, corpus[split], corpus.eos_id, mode, window, stride, batch_size=batch if mode == "window"
                    else (batch_size or 1))
    return {"run_dir": str(run_dir), "task": TASK, "model": cfg.model, "preset": cfg.preset, "split": split,
            "checkpoint": which, "step": ptr["step"], "vocab_size": len(corpus.vocab),
            "oov": corpus.meta["oov"].get(split), **m}


def generate_text(run_dir: str | os.PathLike, prompt: str = "", tokens: int = 50, temperature: float = 1.0,
                  top_k: int | None = None, seed: int = 0, which: str = "best", threads: int | None = None) -> dict:
    """Samples ``tokens`` words after ``prompt`` (space-separated words; unknown ones become ``<unk>``;
    an empty prompt starts after an ``<eos>``). Returns ``{"prompt", "text", "tokens", "seconds",
    "tokens_per_s", ...}``; ``text`` is the continuation (``<eos>`` as a line break)."""
    if not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"--tokens must be a positive integer, got {tokens!r}")
    if not temperature > 0:
        raise ValueError(f"--temperature must be a positive number, got {temperature!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"--top-k must be a positive integer, got {top_k!r}")
    if threads is not None:
        torch.set_num_threads(threads)
    cfg, model, corpus, ptr = load_lm_run(run_dir, which)
    ids = [corpus.eos_id] + corpus.encode(prompt)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    out = model.generate(torch.tensor([ids]), tokens, temperature=temperature, top_k=top_k, generator=gen)
    seconds = time.perf_counter() - t0
    new = out[0, len(ids):].tolist()
    return {"run_dir": str(run_dir), "model": cfg.model, "checkpoint": which, "step": ptr["step"], "prompt": prompt,
            "prompt_tokens": len(ids) - 1, "text": corpus.decode(new), "tokens": len(new), "seconds": round(seconds, 4),
            "tokens_per_s": len(new) / max(seconds, 1e-9), "seed": seed, "temperature": temperature, "top_k": top_k}


@torch.no_grad()
def generation_speed(model, context: int, tokens: int = 256, vocab_size: int | None = None, seed: int = 0,
                     prime_chunk: int = 512) -> dict:
    """Tokens/s of sampling ``tokens`` words one at a time (``model.generate``, carrying the state) after a
    context of ``context`` random words (fed in chunks of ``prime_chunk``, not timed). Wall clock and
    process CPU time are both reported."""
    V = vocab_size or model.cfg.vocab_size
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, V, (1, context), generator=g)
    model.eval()
    state = None
    for s in range(0, context - 1, prime_chunk):
        _, state = model.hidden(ctx[:, s:min(s + prime_chunk, context - 1)], state)
    w0, c0 = time.perf_counter(), time.process_time()
    model.generate(ctx[:, -1:], tokens, top_k=None, generator=g, state=state)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"context": context, "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
            "cpu_seconds": cpu, "tokens_per_cpu_s": tokens / max(cpu, 1e-9)}

"""Language modelling on WikiText-103: the training loop, evaluation (sliding window or carried state),
generation, and the unigram baseline.

``train_lm(cfg)`` runs one :class:`~fastweights.train.lm_config.LMConfig` into ``cfg.out``, with the run
directory, checkpoints, resume, NaN stop, SIGTERM and time budget of the supervised loop: both are
:class:`.driver.StepLoop`, given this module's :class:`_LMTask` for the data, the loss and validation.

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

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_checkpoint
from .common import gather_from_ranks, init_distributed
from .driver import (CKPT, BatchLoss, StepLoop, Task, distributed, release_run, seeded_model_and_optimizer,
                     start_run, write_run_config)
from .lm_config import LMConfig, LMConfigError
from .runs import RunError, load_config, resume_config, run_kind

TASK = "lm"
EVAL_MODES = ("window", "carry")
LMTrainError = RunError


# ------------------------------------------------------------------------------------------ config and data

def is_lm_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` holds a language-model run."""
    try:
        return run_kind(run_dir) == "lm"
    except ValueError:
        return False


def load_lm_config(run_dir: str | os.PathLike) -> LMConfig:
    return load_config(run_dir, expect="lm")


def resume_lm_config(run_dir: str | os.PathLike, overrides: dict) -> LMConfig:
    """The saved config of ``run_dir`` with ``overrides`` (see :func:`.runs.resume_config`)."""
    return resume_config(run_dir, overrides)


def load_corpus_for(cfg: LMConfig, log=None):
    """The run's corpus; refuses data whose checksums differ from those the run recorded."""
    from ..tasks.wikitext import WikiTextError, load_corpus

    try:
        corpus = load_corpus(cfg.data_dir, cfg.train_file, cfg.cache_dir, log=log, expected_sha256=cfg.data_sha256)
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
        release_run(cfg.out)
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: LMConfig, resume, progress, dist, rank, world) -> dict:
    run_dir, device = start_run(cfg, resume, dist, rank, world)
    if rank == 0:  # rank 0 builds the token cache (if it is cold) before the other ranks read it
        corpus = load_corpus_for(cfg, log=_stderr_log)
    if dist is not None:
        dist.barrier()
    if rank != 0:
        corpus = load_corpus_for(cfg)
    V = len(corpus.vocab)
    cfg = cfg.replace(vocab_size=V, cutoffs=cfg.resolved_cutoffs(V) or [],
                              data_sha256=dict(corpus.meta["sha256"]))
    streams = stream_matrix(corpus.train, cfg.batch_size)
    per_epoch = (streams.shape[1] - 1) // cfg.segment_len
    if per_epoch < 1:
        raise LMConfigError("segment_len", f"the training text ({len(corpus.train)} words) is too short for "
                                           f"batch_size {cfg.batch_size} x segment_len {cfg.segment_len}")
    write_run_config(run_dir, cfg, rank, dist)

    model, opt = seeded_model_and_optimizer(cfg, rank, device)
    sched = make_scheduler(opt, cfg.warmup_steps, cfg.steps, cfg.min_lr)
    task = _LMTask(cfg, model, corpus, streams, per_epoch, device, dist, rank, world)
    loop = StepLoop(task, cfg, run_dir, model, opt, sched, dist, rank, world, device)
    if resume:
        loop.resume()
    task.net = distributed(task.net, dist, device, find_unused_parameters=True)
    return loop.run(progress)


class _LMTask(Task):
    """Language modelling's hooks for :class:`.driver.StepLoop`: segment ``segment`` of this process's
    streams (``batch_size / world`` of them), the carried state (with ``carry_state``; fresh at every epoch),
    the mean NLL per word, validation perplexity, best by the lower validation loss."""

    name = TASK
    error = LMTrainError

    def __init__(self, cfg: LMConfig, model, corpus, streams: np.ndarray, per_epoch: int, device, dist, rank: int,
                 world: int):
        self.cfg, self.model, self.corpus, self.streams, self.device = cfg, model, corpus, streams, device
        self.dist, self.rank, self.world = dist, rank, world
        self.net = _LossModule(model)  # what the forward pass calls: this, or its DDP wrapper
        self.S, self.per_epoch = cfg.segment_len, per_epoch
        self.local = cfg.batch_size // world
        self.rows = slice(rank * self.local, (rank + 1) * self.local)
        self.valid_ids = corpus.valid if not cfg.eval_tokens else corpus.valid[: cfg.eval_tokens]
        self.total = cfg.steps
        self.epoch, self.segment, self.carried = 0, 0, None  # the data position and the state it starts from

    def next_batch(self):
        if self.segment >= self.per_epoch:
            self.epoch, self.segment, self.carried = self.epoch + 1, 0, None
        S, s = self.S, self.segment * self.S
        chunk = torch.from_numpy(np.array(self.streams[self.rows, s: s + S + 1], dtype=np.int64))
        return chunk[:, :-1].to(self.device), chunk[:, 1:].to(self.device)

    def forward(self, batch) -> BatchLoss:
        ids, targets = batch
        loss_sum, new_state = self.net(ids, targets, self.carried if self.cfg.carry_state else None)
        words = self.local * self.S
        return BatchLoss(loss_sum, words, {"tokens": words}, new_state)

    def scale(self, loss_sum, global_count):
        return loss_sum / (self.local * self.S)  # DDP averages the gradients: the mean over the global batch

    def after_update(self, loss: BatchLoss) -> None:
        from ..layers.state import detach_state

        self.carried = detach_state(loss.state) if self.cfg.carry_state else None
        self.segment += 1

    def train_metrics(self, totals: dict) -> dict:
        mean = totals["loss_sum"] / max(totals["tokens"], 1)
        return {"loss": mean, "ppl": math.exp(min(mean, 700.0))}

    def progress_metrics(self, accum: dict) -> dict:
        return {"loss": accum["loss_sum"] / max(accum["tokens"], 1)}

    def validate(self) -> dict:
        m = evaluate_lm(self.model, self.valid_ids, self.corpus.eos_id, "carry" if self.cfg.carry_state else "window",
                        window=self.S, batch_size=self.cfg.eval_batch_size, device=self.device)
        return {"loss": m["loss"], "ppl": m["perplexity"], "tokens": m["tokens"]}

    def beats(self, metrics: dict, best: dict) -> bool:
        return metrics["loss"] < best["loss"]

    def best_record(self, step: int, metrics: dict) -> dict:
        return {"step": step, "loss": metrics["loss"], "ppl": metrics["ppl"]}

    def checkpoint_state(self) -> dict:
        carries = gather_from_ranks(self.dist, self.world, _to_device(self.carried, "cpu"))
        return {"epoch": self.epoch, "segment": self.segment, "carry": carries}

    def restore(self, state: dict, ckpt_root: Path) -> None:
        self.epoch, self.segment = int(state["epoch"]), int(state["segment"])
        carries = state["carry"]
        carried = carries[self.rank] if len(carries) == self.world else None
        if self.segment > self.per_epoch:
            raise CheckpointError(f"checkpoint in {ckpt_root}: data position {self.segment} is past the epoch's "
                                  f"{self.per_epoch} segments")
        self.carried = _to_device(carried, self.device) if carried is not None else None

    def describe(self) -> str:
        cfg, params = self.cfg, sum(p.numel() for p in self.model.parameters())
        budget = f" within {cfg.time_budget_minutes:g} {cfg.budget_clock} min" if cfg.time_budget_minutes else ""
        return (f"language model {cfg.model} (preset {cfg.preset}, {params:,} parameters), vocabulary "
                f"{cfg.vocab_size:,}, {len(self.corpus.train):,} training words, {self.total} steps of "
                f"{cfg.batch_size} x {self.S} words{' carrying the state' if cfg.carry_state else ''}"
                f"{f' on {self.world} processes' if self.world > 1 else ''}{budget}")

    def describe_best(self, best: dict) -> str:
        return f"perplexity {best['ppl']:.2f} (first {len(self.valid_ids):,} words)"

    def summary(self, summary: dict, train_seconds: float) -> dict:
        words = summary["step"] * self.cfg.batch_size * self.S
        extra = {"train_words": words, "epochs": round(summary["step"] / self.per_epoch, 3),
                 "words_per_s": round(words / max(train_seconds, 1e-9), 1), "vocab_size": self.cfg.vocab_size,
                 "parameters": sum(p.numel() for p in self.model.parameters())}
        both = {**summary, **extra}
        return {k: both[k] for k in SUMMARY_ORDER}  # the key order summary.json has always had


# the LM's summary.json: the driver's entries with the LM's among them
SUMMARY_ORDER = ("status", "stopped", "step", "total_steps", "world_size", "best_step", "best_valid", "train_words",
                 "epochs", "seconds_this_session", "train_seconds", "words_per_s", "budget_clock",
                 "time_budget_minutes", "vocab_size", "parameters")


def _stderr_log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _to_device(state, device):
    from ..layers.state import map_state

    return map_state(state, lambda t: t.to(device))


# ------------------------------------------------------------------------------------------ runs

def load_lm_run(run_dir: str | os.PathLike, which: str = "best", log=None):
    """``(cfg, model in eval mode, corpus, pointer)`` of a language-model run's ``which`` checkpoint."""
    from ..models import build_model

    run_dir = Path(run_dir)
    cfg = load_lm_config(run_dir)
    corpus = load_corpus_for(cfg.replace(cache_dir=None), log=log)  # the user's cache root, never config.json's
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

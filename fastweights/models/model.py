"""The model: embedding -> pre-LN blocks (mixer + ReLU feedforward) -> final LN -> head.

Read top to bottom: positions, the embedding/LM-head pair (plain or adaptive softmax, tied or not),
then :class:`FWPModel` with its heads, state handling and generation. The blocks are
:class:`~fastweights.models.blocks.BlockStack`, shared with the RL cores.

State of a model: ``{"pos": [B] long (tokens seen per row), "layers": (state of block 0, ...)}``.
Every tensor has the batch first and a zero row is a fresh start, so ``done`` masks and
``layers.state.reset_state`` work on it directly, and ``detach_state`` cuts it for truncated BPTT.
"""

from __future__ import annotations

import bisect
import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.dropout import Dropout
from ..layers.state import detach_state, reset_state
from .blocks import BlockStack
from .config import ModelConfig


def sinusoidal_positions(pos: torch.Tensor, d_model: int, dtype: torch.dtype) -> torch.Tensor:
    """``pos`` [B, T] (int) -> [B, T, d_model]: sin on the first half of the features, cos on the second."""
    angles = pos.to(torch.float64)[..., None] * _inverse_frequencies(d_model, pos.device)  # [B, T, half]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[..., :d_model].to(dtype)


@functools.lru_cache(maxsize=16)
def _inverse_frequencies(d_model: int, device: torch.device) -> torch.Tensor:
    """The sinusoids' ``(d_model + 1) // 2`` inverse frequencies (float64), made once per size and device (a
    generated token's position needs them at every step)."""
    half = (d_model + 1) // 2
    return torch.exp(torch.arange(half, device=device, dtype=torch.float64) * (-math.log(10000.0) / half))


# At most this many ids are embedded one row lookup each (their clusters found from Python ints), rather than with
# one mask, gather and scatter per cluster: generation's one token per row, where the masks were most of the cost.
FEW_IDS = 8


class WordEmbedding(nn.Module):
    """Token ids -> vectors of size d_model, scaled by sqrt(d_model).

    Word weights are initialised N(0, 1/d_model), so the scaled input embedding has unit-size entries
    and, tied, the output logits start at unit scale.

    * Plain: an ``nn.Embedding``; tied, the LM head's linear layer uses its weight.
    * Adaptive softmax, tied (``asm`` given): no weight of its own. Word w in the shortlist
      ``[0, c0)`` takes row w of ``asm.head.weight`` (the rows after the shortlist are the cluster logits
      and are no word's embedding); word w in tail cluster i ``[c_i, c_{i+1})`` takes row ``w - c_i`` of
      ``asm.tail[i][1].weight``, that cluster's output layer. With div_value 1 all of these rows have
      size d_model. The tail's input projection ``asm.tail[i][0]`` (d_model x d_model) stays untied.
    """

    def __init__(self, vocab_size: int, d_model: int, asm: nn.AdaptiveLogSoftmaxWithLoss | None = None):
        super().__init__()
        self.vocab_size, self.d_model, self.scale = vocab_size, d_model, math.sqrt(d_model)
        self.asm = [asm]  # a list, so the shared module is not registered twice
        if asm is None:
            self.weight = nn.Parameter(torch.randn(vocab_size, d_model) * d_model ** -0.5)

    def clusters(self):
        """(first id, end id, weight whose row r is the embedding of word first + r) per cluster."""
        asm = self.asm[0]
        if asm is None:
            return [(0, self.vocab_size, self.weight)]
        bounds = asm.cutoffs  # [c0, c1, ..., vocab_size]
        out = [(0, bounds[0], asm.head.weight)]
        for i in range(asm.n_clusters):
            out.append((bounds[i], bounds[i + 1], asm.tail[i][1].weight))
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        clusters = self.clusters()
        if len(clusters) == 1:
            return F.embedding(ids, clusters[0][2]) * self.scale
        if ids.numel() <= FEW_IDS:
            return self._embed_few(ids, clusters)
        weight = clusters[0][2]
        emb = weight.new_zeros(*ids.shape, self.d_model)
        for lo, hi, w in clusters:
            m = (ids >= lo) & (ids < hi)
            if m.any():
                emb = emb.index_put((m,), F.embedding(ids[m] - lo, w))
        return emb * self.scale

    def _embed_few(self, ids: torch.Tensor, clusters) -> torch.Tensor:
        """:meth:`forward` for a few ids (the same rows, times the same scale): each id's cluster is found from its
        Python int, and its row read directly."""
        firsts = [lo for lo, _, _ in clusters]
        rows = []
        for i in ids.flatten().tolist():
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"ids must lie in [0, vocab_size={self.vocab_size}), got {i}")
            lo, _, w = clusters[bisect.bisect_right(firsts, i) - 1]
            rows.append(w[i - lo])
        weight = clusters[0][2]
        emb = torch.stack(rows) if rows else weight.new_zeros(0, self.d_model)
        return emb.view(*ids.shape, self.d_model) * self.scale


class FWPModel(nn.Module):
    """``model(ids, state=None, done=None, lengths=None) -> (output, new_state)``.

    ids: ``[B, T]`` long token ids, or ``[B, T, d_model]`` float vectors (skips the embedding, e.g. as an
    RL core on encoder features). ``done`` ([B] bool) resets those rows' state before this step;
    ``lengths`` ([B]) gives each row's number of valid tokens for the sequence head (right padding).

    output by head:
      * ``token``: logits ``[B, T, num_classes]``.
      * ``sequence``: logits ``[B, num_classes]`` from each row's last valid token.
      * ``lm``: logits ``[B, T, vocab]``; with adaptive softmax, full log-probabilities ``[B, T, vocab]``
        (use :meth:`lm_loss` to train: it never builds the full distribution).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, V = cfg.d_model, cfg.vocab_size
        self.asm = None
        self.lm_head = None
        self.classifier = None
        if cfg.head == "lm" and cfg.adaptive_softmax is not None:
            self.asm = nn.AdaptiveLogSoftmaxWithLoss(d, V, cutoffs=cfg.adaptive_softmax, div_value=1.0)
            with torch.no_grad():
                for _, _, w in WordEmbedding(V, d, self.asm).clusters():
                    w.normal_(0.0, d ** -0.5)
        tie_asm = self.asm if (self.asm is not None and cfg.tie_embeddings) else None
        self.embed = WordEmbedding(V, d, tie_asm)
        self.drop = Dropout(cfg.dropout)  # nn.Dropout's maths, a cheaper mask (layers.dropout)
        self.blocks = BlockStack(cfg.layer, d, cfg.num_layers, cfg.num_heads, cfg.d_ff, cfg.dropout, cfg.head_dim,
                                 cfg.layer_options)
        self.norm = nn.LayerNorm(d)
        if cfg.head == "lm" and self.asm is None:
            self.lm_head = nn.Linear(d, V, bias=False)
            if cfg.tie_embeddings:
                self.lm_head.weight = self.embed.weight
            else:
                nn.init.normal_(self.lm_head.weight, 0.0, d ** -0.5)
        elif cfg.head in ("token", "sequence"):
            self.classifier = nn.Linear(d, cfg.num_classes)

    # ---- state -------------------------------------------------------------------------------------
    @staticmethod
    def detach_state(state):
        """Values carry over, gradients do not (truncated BPTT between segments)."""
        return detach_state(state)

    @staticmethod
    def reset_state(state, done):
        """Zeroes the rows of ``state`` where ``done`` is true: those sequences start afresh."""
        return reset_state(state, done)

    # ---- trunk -------------------------------------------------------------------------------------
    def hidden(self, ids: torch.Tensor, state=None, done=None, keep=None):
        """Runs the trunk: ``-> (features [B, T, d_model] after the final LN, new_state)``."""
        if ids.is_floating_point():
            if ids.dim() != 3 or ids.shape[-1] != self.cfg.d_model:
                raise ValueError(f"float inputs must be [B, T, d_model={self.cfg.d_model}], "
                                 f"got shape {tuple(ids.shape)}")
            x = ids
        else:
            if ids.dim() != 2:
                raise ValueError(f"ids must be [B, T] token ids, got shape {tuple(ids.shape)}")
            if ids.dtype == torch.bool or ids.is_complex():
                raise ValueError(f"ids must be integer token ids, got dtype {ids.dtype}")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cfg.vocab_size):
                raise ValueError(f"ids must lie in [0, vocab_size={self.cfg.vocab_size}), "
                                 f"got range [{int(ids.min())}, {int(ids.max())}]")
            x = self.embed(ids)  # [B, T, d_model]
        return self._trunk(x, state, done, keep)

    def _trunk(self, x: torch.Tensor, state=None, done=None, keep=None):
        """:meth:`hidden` from the embedded inputs ``x`` [B, T, d_model], without the checks of the ids."""
        B, T = x.shape[:2]
        if state is None:
            pos, layer_states = torch.zeros(B, dtype=torch.long, device=x.device), None
        else:
            pos, layer_states = state["pos"], state["layers"]
            if done is not None:
                pos = reset_state(pos, done)
        if self.cfg.pos_encoding == "sinusoidal":
            x = x + sinusoidal_positions(pos[:, None] + torch.arange(T, device=x.device), self.cfg.d_model, x.dtype)
        x, layer_states = self.blocks(self.drop(x), layer_states, done, keep)
        return self.norm(x), {"pos": pos + T, "layers": layer_states}

    def forward(self, ids: torch.Tensor, state=None, done=None, lengths=None, keep=None):
        """The head's outputs and the new state. ``keep`` ([B, T] bool; token and LM heads): only the positions a
        loss reads are computed past the last mixer, and the outputs are ``[N, ...]`` for the N kept positions in
        row-major order, equal to ``outputs[keep]`` of the full call (the mixers still read every position)."""
        if keep is not None:
            if self.cfg.head == "sequence":
                raise ValueError("keep is for the token and LM heads; the sequence head reads one position per row "
                                 "(give lengths)")
            if keep.dtype != torch.bool or keep.shape != ids.shape[:2]:
                raise ValueError(f"keep must be a [B, T] = {tuple(ids.shape[:2])} bool tensor, got "
                                 f"{tuple(keep.shape)} {keep.dtype}")
        h, state = self.hidden(ids, state, done, keep)
        head = self.cfg.head
        if head == "token":
            return self.classifier(h), state
        if head == "sequence":
            return self.classifier(last_valid(h, lengths)), state
        return self._word_scores(h), state

    # ---- language model ----------------------------------------------------------------------------
    def _word_scores(self, h: torch.Tensor) -> torch.Tensor:
        """[..., d_model] -> [..., vocab]: logits (plain) or log-probabilities (adaptive softmax)."""
        if self.asm is None:
            return self.lm_head(h)
        with torch.autocast(h.device.type, enabled=False):
            flat = self.asm.log_prob(_at_least_fp32(h.reshape(-1, h.shape[-1])))
        return flat.view(*h.shape[:-1], -1)

    def _require_lm(self):
        if self.cfg.head != "lm":
            raise ValueError(f"this needs head 'lm', the model has head {self.cfg.head!r}")

    def log_prob(self, ids: torch.Tensor, state=None, done=None):
        """Full next-word log-probabilities ``[B, T, vocab]`` and the new state."""
        self._require_lm()
        h, state = self.hidden(ids, state, done)
        return F.log_softmax(self._word_scores(h), dim=-1) if self.asm is None else self._word_scores(h), state

    def lm_loss(self, ids: torch.Tensor, targets: torch.Tensor, state=None, done=None,
                reduction: str = "mean", ignore_index: int = -100):
        """Next-word negative log-likelihood (nats) of ``targets`` [B, T] given ``ids`` [B, T].

        Targets equal to ``ignore_index`` are skipped. ``reduction``: "mean" (over counted targets),
        "sum", or "none" ([B, T], zero where ignored). Returns ``(loss, new_state)``. With adaptive
        softmax only the needed clusters are evaluated."""
        self._require_lm()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        h, state = self.hidden(ids, state, done)
        if targets.shape != h.shape[:2]:
            raise ValueError(f"targets must have shape {tuple(h.shape[:2])}, got {tuple(targets.shape)}")
        keep = targets != ignore_index
        nll = h.new_zeros(targets.shape, dtype=torch.promote_types(h.dtype, torch.float32))  # fp32 under autocast
        if keep.any():
            if self.asm is None:
                nll_keep = F.cross_entropy(self.lm_head(h[keep]), targets[keep], reduction="none")
            else:  # the adaptive softmax in float32 (under autocast its index_copy_ would mix dtypes)
                with torch.autocast(h.device.type, enabled=False):
                    nll_keep = -self.asm(_at_least_fp32(h[keep]), targets[keep]).output
            nll = nll.index_put((keep,), nll_keep.to(nll.dtype))
        if reduction == "none":
            return nll, state
        if reduction == "sum":
            return nll.sum(), state
        return nll.sum() / keep.sum().clamp_min(1), state

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None, state=None):
        """Samples ``max_new_tokens`` words after ``prompt_ids`` [B, T0]; returns ``[B, T0 + max_new_tokens]``.

        The prompt is fed once, then one token at a time carrying the state, so memory is constant in
        the context length for the FWP models (the transformer's cache grows unless it has a window).
        ``top_k=1`` is greedy decoding. Runs in eval mode (no dropout), restoring the previous mode."""
        self._require_lm()
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
            raise ValueError(f"prompt_ids must be [B, T0] token ids with T0 >= 1 (start from an <eos> for a new "
                             f"text), got {getattr(prompt_ids, 'shape', prompt_ids)!r}")
        was_training = self.training
        self.eval()
        try:
            out = [prompt_ids]
            h, state = self.hidden(prompt_ids, state)
            for i in range(max_new_tokens):
                nxt = self._next_word(h[:, -1], temperature, top_k, generator)  # [B, 1]
                out.append(nxt)
                if i + 1 < max_new_tokens:
                    # the model's own words: in range, so no checks; one step, so every op takes its step path
                    h, state = self._trunk(self.embed(nxt), state)
            return torch.cat(out, dim=1)
        finally:
            self.train(was_training)


    def _next_word(self, h: torch.Tensor, temperature: float, top_k: int | None, generator) -> torch.Tensor:
        """One sampled word per row of ``h`` [B, d_model] -> [B, 1].

        ``top_k=1`` is the argmax. With the adaptive softmax, temperature 1 and no top-k, the word is drawn
        in two stages, the head's entry (a shortlist word or a cluster), then a word of the chosen cluster,
        so only the tails drawn are computed: the same distribution as the full one, at a fraction of its
        cost. Otherwise the full distribution is formed. Draws use inverse-CDF sampling (one uniform number a
        row), which costs a cumulative sum instead of ``torch.multinomial``'s exponential draw per word."""
        if top_k == 1:
            return self._word_scores(h).argmax(dim=-1, keepdim=True)
        if self.asm is not None and temperature == 1 and top_k is None:
            asm = self.asm
            head = F.softmax(asm.head(h).float(), dim=-1)  # [B, shortlist + clusters]
            nxt = _inverse_cdf(head, generator)
            for row, entry in enumerate(nxt[:, 0].tolist()):  # one read of the draws, not a mask and its nonzero
                if entry < asm.shortlist_size:
                    continue
                c = entry - asm.shortlist_size
                tail = F.softmax(asm.tail[c](h[row:row + 1]).float(), dim=-1)
                nxt[row, 0] = asm.cutoffs[c] + _inverse_cdf(tail, generator)[0, 0]
            return nxt
        scores = self._word_scores(h).float() / temperature  # [B, vocab]
        if top_k is not None and top_k < scores.shape[-1]:
            kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        return _inverse_cdf(F.softmax(scores, dim=-1), generator)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a lower precision (bf16/fp16 under autocast), else unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _inverse_cdf(probs: torch.Tensor, generator=None) -> torch.Tensor:
    """One index per row of ``probs`` [B, N] drawn with those probabilities: [B, 1] (zero-probability entries
    are never drawn)."""
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=probs.shape[-1] - 1)


def last_valid(h: torch.Tensor, lengths=None) -> torch.Tensor:
    """[B, T, d] -> [B, d]: each row's last valid token (position lengths - 1; the last when None)."""
    B, T = h.shape[:2]
    if lengths is None:
        return h[:, -1]
    lengths = torch.as_tensor(lengths, device=h.device)
    if lengths.shape != (B,) or lengths.is_floating_point():
        raise ValueError(f"lengths must be a [B={B}] int tensor, got {tuple(lengths.shape)} {lengths.dtype}")
    if int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise ValueError(f"lengths must lie in [1, T={T}], got range [{int(lengths.min())}, {int(lengths.max())}]")
    return h[torch.arange(B, device=h.device), lengths.long() - 1]


def build_model(cfg: ModelConfig | None = None, **fields) -> FWPModel:
    """``build_model(layer="deltanet", vocab_size=1000, ...)`` or ``build_model(ModelConfig(...))``."""
    if cfg is None:
        cfg = ModelConfig(**fields)
    elif fields:
        raise ValueError("pass a ModelConfig or fields, not both")
    return FWPModel(cfg)


def count_parameters(model: nn.Module) -> int:
    """Parameters counted once each (tied weights count once)."""
    return sum(p.numel() for p in model.parameters())

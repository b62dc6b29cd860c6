"""``FastWeightsForCausalLM``: a fastweights language model (:class:`~fastweights.models.FWPModel`, head ``"lm"``)
as a ``transformers`` causal LM, and :class:`FastWeightsCache`, the layer state as its generation cache.

* ``logits`` are what the native model returns: the LM head's logits, or with the adaptive softmax the full
  log-probabilities it defines (``[B, T, vocab]``, already normalised; a softmax over them gives them back).
* The cache is the model's state ``{"pos", "layers"}``: the fast weights and recurrent states of every block
  (constant size for every fast weight programmer), the key/value cache for the softmax ``transformer``. A forward
  over a chunk gives what token-by-token forwards carrying the cache give, to float tolerance.
* ``attention_mask`` may pad on the left (each row ``0 ... 0 1 ... 1``): the state is reset after a row's padding,
  so its first real token starts from a fresh state at position 0, exactly as without padding. A 0 after a row's
  first 1 (right padding, holes) is refused with a ``ValueError``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from ..layers.state import map_state, reset_state
from ..models import FWPModel
from .configuration import FastWeightsConfig

# transformers 5 names the generation cache ``cache`` (``past_key_values`` before); generate() keeps it in its
# model kwargs under that name, so that is where this model reads and writes it
CACHE_KWARG = ("cache" if "cache" in inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
               else "past_key_values")
_UNSET = object()


class FastWeightsCache:
    """The state of a :class:`FastWeightsForCausalLM` as a generation cache.

    ``state``: the native model's state (``{"pos": [B], "layers": (state of block 0, ...)}``, batch first) or
    None before the first token; ``seen_tokens``: the columns of ``input_ids`` consumed so far (left padding
    included); ``started`` ([B] bool): the rows that have had a real (unpadded) token."""

    is_compileable = False
    is_croppable = False

    def __init__(self, state=None, seen_tokens: int = 0, started: torch.Tensor | None = None):
        self.state = state
        self.seen_tokens = seen_tokens
        self.started = started

    @property
    def is_linear(self) -> list[bool]:
        # generate() slices input_ids by get_seq_length() when a cache is passed in unless every layer is "linear";
        # input_ids always hold the whole sequence here, so slicing is what this cache wants
        return [False]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns of input ids the cache has consumed."""
        return self.seen_tokens

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache holds."""
        out = []
        map_state(self.state, out.append)
        return out

    def nbytes(self) -> int:
        """Bytes held by the cache's tensors: constant in the number of tokens for every fast weight programmer."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keeps rows ``beam_idx`` (beam search), in place."""
        self.state = map_state(self.state, lambda t: t.index_select(0, beam_idx.to(t.device)))
        if self.started is not None:
            self.started = self.started.index_select(0, beam_idx.to(self.started.device))

    def activate_past_recording(self):
        raise ValueError("fastweights models cannot roll their state back: assisted decoding (assistant_model, "
                         "prompt_lookup_num_tokens) is not supported")

    def crop(self, max_length: int):
        raise ValueError("fastweights models cannot roll their state back (cache.crop)")

    def __repr__(self) -> str:
        return f"FastWeightsCache(seen_tokens={self.seen_tokens}, tensors={len(self.tensors())}, bytes={self.nbytes()})"


@dataclass
class FastWeightsCausalLMOutput(ModelOutput):
    """``loss`` (with ``labels``), ``logits`` ``[B, T, vocab]`` (log-probabilities with the adaptive softmax),
    ``cache`` (:class:`FastWeightsCache`, with ``use_cache``), ``hidden_states`` (with ``output_hidden_states``:
    the final features after the last LayerNorm, the one hidden state this model exposes)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: FastWeightsCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None

    @property
    def past_key_values(self) -> FastWeightsCache | None:
        return self.cache


def _left_padding(mask: torch.Tensor, started: torch.Tensor | None) -> torch.Tensor:
    """``mask`` [B, T] (this call's columns) -> [B] the number of leading padding columns of each row, after
    checking the mask pads on the left only (and not at all in rows that already had a real token)."""
    if mask.dim() != 2:
        raise ValueError(f"attention_mask must be [batch, length] of 0/1, got shape {tuple(mask.shape)}")
    m = mask.to(torch.long)
    if bool(((m != 0) & (m != 1)).any()):
        raise ValueError("attention_mask must hold only 0 and 1")
    if bool((m[:, 1:] < m[:, :-1]).any()):
        row = int((m[:, 1:] < m[:, :-1]).any(1).nonzero()[0])
        raise ValueError(f"attention_mask row {row} has a 0 after a 1: only left padding (0 ... 0 1 ... 1) is "
                         f"supported; pad on the left")
    pads = (m == 0).sum(1)
    if started is not None and bool((started & (pads > 0)).any()):
        row = int((started & (pads > 0)).nonzero()[0])
        raise ValueError(f"attention_mask row {row} has a 0 after the row's first 1 (in an earlier call): only left "
                         f"padding is supported")
    return pads


class FastWeightsForCausalLM(PreTrainedModel, GenerationMixin):
    """A fastweights language model (``self.model``, an :class:`~fastweights.models.FWPModel` with head "lm") as a
    ``transformers`` causal LM: ``from_pretrained``/``save_pretrained``, ``generate`` with the layer state as the
    cache, ``labels`` for the loss. Build one from a native model with :meth:`from_native`."""

    config_class = FastWeightsConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"model.lm_head.weight": "model.embed.weight"}  # used when config.tie_word_embeddings
    supports_gradient_checkpointing = False

    def __init__(self, config: FastWeightsConfig):
        super().__init__(config)
        self.model = FWPModel(config.model_config())
        self.post_init()

    @classmethod
    def from_native(cls, model: FWPModel, **config_kwargs) -> "FastWeightsForCausalLM":
        """The transformers model holding a copy of ``model``'s weights (``config_kwargs``: token ids etc.)."""
        if not isinstance(model, FWPModel):
            raise ValueError(f"model must be a fastweights FWPModel, got {type(model).__name__}")
        config = FastWeightsConfig.from_model_config(model.cfg, **config_kwargs)
        hf = cls(config)
        hf.model.load_state_dict(model.state_dict())
        hf.train(model.training)
        return hf

    def _init_weights(self, module):
        pass  # FWPModel initialises its own weights (the paper's initialisation); loading overwrites them

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.model.lm_head  # None with the adaptive softmax

    # ---- generation ----------------------------------------------------------------------------------------
    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the cache is a FastWeightsCache, made by the first forward

    def generate(self, *args, **kwargs):
        """transformers' ``generate``; assisted decoding (an assistant model, prompt lookup) is refused: it rolls the
        cache back, and a fast weight state cannot be rolled back."""
        config = kwargs.get("generation_config") or self.generation_config
        for name in ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit"):
            if kwargs.get(name) is not None or getattr(config, name, None) is not None:
                raise ValueError(f"{name}: assisted decoding is not supported by fastweights models (their state "
                                 f"cannot be rolled back)")
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, inputs_embeds=None, use_cache=True,
                                      next_sequence_length=_UNSET, is_first_iteration=False, **kwargs):
        cache = kwargs.pop(CACHE_KWARG, None)
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        if cache is not None and not isinstance(cache, FastWeightsCache):
            raise ValueError(f"the cache of a fastweights model must be a FastWeightsCache, got {type(cache).__name__}")
        if next_sequence_length is _UNSET:  # transformers 4: input_ids hold the whole sequence
            next_sequence_length = None if cache is None else input_ids.shape[1] - cache.seen_tokens
        inputs = {"attention_mask": attention_mask, "use_cache": use_cache, "cache": cache}
        if inputs_embeds is not None and (cache is None or cache.seen_tokens == 0):
            inputs["inputs_embeds"] = inputs_embeds if next_sequence_length is None else \
                inputs_embeds[:, -next_sequence_length:]
        else:
            inputs["input_ids"] = input_ids if next_sequence_length is None else input_ids[:, -next_sequence_length:]
        for key in ("output_hidden_states", "return_dict", "logits_to_keep"):
            if key in kwargs:
                inputs[key] = kwargs[key]
        return inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False,
                                            num_new_tokens=1, **kwargs):
        model_kwargs[CACHE_KWARG] = outputs.get("cache")
        mask = model_kwargs.get("attention_mask")
        if mask is not None:
            model_kwargs["attention_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], num_new_tokens)], dim=-1)
        return model_kwargs

    # ---- forward -------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                cache: FastWeightsCache | None = None, inputs_embeds: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, use_cache: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                logits_to_keep: int = 0, past_key_values: FastWeightsCache | None = None,
                output_attentions: bool | None = None, position_ids=None, **kwargs):
        """``input_ids`` [B, T] (or ``inputs_embeds`` [B, T, d_model], the embedding's output) continue the
        sequence ``cache`` holds (None: a fresh start). ``attention_mask`` [B, T] or [B, seen + T]: 1 for real
        tokens, 0 for left padding. ``labels`` [B, T]: the loss is the mean next-token cross-entropy of
        ``labels[:, 1:]`` given the logits before them (-100 skipped). ``logits_to_keep`` k > 0: logits of the
        last k positions only. ``position_ids`` must be None: positions come from the cache and the padding."""
        unknown = {k: v for k, v in kwargs.items() if v is not None}
        if unknown:
            raise ValueError(f"FastWeightsForCausalLM.forward got unsupported arguments {sorted(unknown)}")
        if output_attentions:
            raise ValueError("output_attentions: fastweights models have no attention weights to return")
        if position_ids is not None:
            raise ValueError("position_ids: fastweights models take positions from the cache and the left padding of "
                             "attention_mask; pass position_ids=None")
        if cache is None:
            cache = past_key_values
        if cache is not None and not isinstance(cache, FastWeightsCache):
            raise ValueError(f"cache must be a FastWeightsCache (from an earlier output), got {type(cache).__name__}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = input_ids if input_ids is not None else inputs_embeds
        use_cache = self.config.use_cache if use_cache is None else use_cache
        return_dict = getattr(self.config, "return_dict", True) if return_dict is None else return_dict
        B, T = x.shape[:2]
        state = None if cache is None else cache.state
        started = None if cache is None else cache.started
        if started is not None and started.shape[0] != B:
            raise ValueError(f"the cache holds {started.shape[0]} rows, the inputs have {B}")

        pads = None
        if attention_mask is not None:
            seen = 0 if cache is None else cache.seen_tokens
            if attention_mask.dim() != 2 or attention_mask.shape[0] != B or attention_mask.shape[1] not in (T, seen + T):
                raise ValueError(f"attention_mask must be [batch={B}, {T}] or [batch={B}, cached + new = {seen + T}], "
                                 f"got shape {tuple(attention_mask.shape)}")
            pads = _left_padding(attention_mask[:, -T:].to(x.device), started)
        h, state = self._trunk(x, state, pads)

        new_started = torch.ones(B, dtype=torch.bool, device=x.device) if pads is None else pads < T
        if started is not None:
            new_started = new_started | started.to(new_started.device)
        new_cache = None
        if use_cache:
            new_cache = FastWeightsCache(state, (0 if cache is None else cache.seen_tokens) + T, new_started)

        if isinstance(logits_to_keep, int):
            kept = h[:, -logits_to_keep:] if logits_to_keep > 0 else h
        else:
            kept = h[:, logits_to_keep]
        logits = self.model._word_scores(kept)

        loss = None
        if labels is not None:
            if labels.shape != (B, T):
                raise ValueError(f"labels must have the shape of the inputs {(B, T)}, got {tuple(labels.shape)}")
            scores = logits if kept.shape[1] == T else self.model._word_scores(h)
            targets = labels[:, 1:].to(scores.device)
            loss = F.cross_entropy(scores[:, :-1].float().reshape(-1, scores.shape[-1]), targets.reshape(-1),
                                   ignore_index=-100)
        hidden = (h,) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (loss, logits, new_cache, hidden) if v is not None)
        return FastWeightsCausalLMOutput(loss=loss, logits=logits, cache=new_cache, hidden_states=hidden)

    def _trunk(self, x, state, pads):
        """The native trunk over ``x``; with left padding (``pads`` [B]), the state of each row is reset right
        after its padding, so its first real token starts afresh (position 0, empty memory)."""
        if pads is None or int(pads.max()) == 0:
            return self.model.hidden(x, state)
        T = x.shape[1]
        pieces, start = [], 0
        for end in sorted(set(pads.tolist()) - {0}):
            h, state = self.model.hidden(x[:, start:end], state)
            state = reset_state(state, pads >= end)
            pieces.append(h)
            start = end
        if start < T:
            h, state = self.model.hidden(x[:, start:], state)
            pieces.append(h)
        return torch.cat(pieces, dim=1), state

"""A trained language-model run -> a directory that transformers' ``from_pretrained`` loads.

``export_run(RUN_DIR, OUT)`` (``fastweights export RUN_DIR --hf OUT``) writes, from the run's best checkpoint:

* ``model.safetensors`` and ``config.json`` (:class:`~fastweights.hf.FastWeightsConfig`, model type
  ``"fastweights"``) and ``generation_config.json``;
* the tokenizer (``tokenizer.json``, ``tokenizer_config.json``): a ``PreTrainedTokenizerFast`` with a word-level
  model over the run's vocabulary (ids as in training), splitting on whitespace, a newline read as ``<eos>``,
  unknown words mapped to ``<unk>``, decoding a space before every word and ``<eos>`` as a line break; ``<eos>`` is its end-of-sequence and padding token, and it pads on the left;
* ``configuration_fastweights.py`` / ``modeling_fastweights.py``: two-line ``trust_remote_code`` entry points
  (``auto_map`` in the config) that import the classes from the installed ``fastweights``, so a process that never
  imports fastweights (``lm_eval --model hf --model_args pretrained=OUT,trust_remote_code=True``) can load it.

The adaptive softmax is kept as it is: the exported model's logits are its full log-probabilities.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..tasks.wikitext import EOS, UNK

REMOTE_CODE = {
    "configuration_fastweights.py": ("FastWeightsConfig", "fastweights.hf.configuration"),
    "modeling_fastweights.py": ("FastWeightsForCausalLM", "fastweights.hf.modeling"),
}
AUTO_MAP = {"AutoConfig": "configuration_fastweights.FastWeightsConfig",
            "AutoModelForCausalLM": "modeling_fastweights.FastWeightsForCausalLM"}


class ExportError(ValueError):
    """An export that cannot be done (a one-line message naming the argument and value)."""


def build_tokenizer(vocab: list[str]):
    """A ``PreTrainedTokenizerFast`` over ``vocab`` (id -> word; must hold ``<unk>`` and ``<eos>``): words split
    on whitespace, a newline is ``<eos>``, unknown words are ``<unk>``; pads with ``<eos>`` on the left."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    missing = [w for w in (UNK, EOS) if w not in vocab]
    if missing:
        raise ExportError(f"the vocabulary has no {' and no '.join(missing)}")
    if len(set(vocab)) != len(vocab):
        raise ExportError("the vocabulary holds a word twice")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    tok.normalizer = normalizers.Replace("\n", f" {EOS} ")
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # decoding: <eos> is a line break and every word is written after a space (WikiText's own layout, and what
    # lets the text-generation pipeline append a decoded continuation to its prompt)
    tok.decoder = decoders.Sequence([decoders.Replace(EOS, "\n"), decoders.Replace(Regex("^(?!\n)"), " ")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, eos_token=EOS, pad_token=EOS,
                                   padding_side="left", model_input_names=["input_ids", "attention_mask"],
                                   clean_up_tokenization_spaces=False)


def check_output_dir(out, flag: str = "--hf") -> Path:
    """``out`` if it can be written: absent, or an empty directory (never overwrites anything)."""
    path = Path(out).expanduser()
    if not str(out).strip():
        raise ExportError(f"{flag}: expected a directory path, got {str(out)!r}")
    if path.exists() and not path.is_dir():
        raise ExportError(f"{flag}: {out} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        raise ExportError(f"{flag}: {out} exists and is not empty; give a new or empty directory")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise ExportError(f"{flag}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{flag}: cannot write in {parent} (permission denied)")
    return path


def export_run(run_dir, out, which: str = "best", log=None) -> dict:
    """Writes the run's ``which`` checkpoint (``"best"`` or ``"last"``) to ``out`` (absent or empty) as a
    transformers model directory. Returns ``{"out", "run_dir", "step", "layer", "vocab_size", "files"}``.

    Raises :class:`ExportError` / ``ValueError`` (one line): not a language-model run, no checkpoint, ``out``
    not empty. The directory appears complete or not at all (written beside it, then renamed)."""
    from ..train.lm import load_lm_run
    from ..train.runs import require_kind
    from . import register
    from .modeling import FastWeightsForCausalLM

    if which not in ("best", "last"):
        raise ExportError(f"--checkpoint: must be best or last, got {which!r}")
    path = check_output_dir(out)
    require_kind(run_dir, "lm", what="export")
    cfg, model, corpus, ptr = load_lm_run(run_dir, which, log=log)
    register()
    source = {"run": Path(run_dir).resolve().name, "checkpoint": which, "step": int(ptr["step"]),
              "model": cfg.model}
    hf = FastWeightsForCausalLM.from_native(model, eos_token_id=corpus.eos_id, pad_token_id=corpus.eos_id,
                                            fastweights_source=source)
    hf.config.auto_map = dict(AUTO_MAP)
    tokenizer = build_tokenizer(list(corpus.vocab))

    parent = path.absolute().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary directory
        hf.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, (cls, module) in REMOTE_CODE.items():
            (tmp / name).write_text(f'"""transformers\' trust_remote_code entry point: the class from the installed '
                                    f'fastweights (pip install \'fastweights[hf]\')."""\n\n'
                                    f"from {module} import {cls}  # noqa: F401\n", encoding="utf-8")
        if path.is_dir():
            path.rmdir()  # empty (checked above); os.replace needs the name free
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(path), "run_dir": str(run_dir), "checkpoint": which, "step": int(ptr["step"]),
            "layer": cfg.model_config().layer, "vocab_size": len(corpus.vocab),
            "files": sorted(p.name for p in path.iterdir())}

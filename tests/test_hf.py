"""Hugging Face transformers integration (issue 19): every fastweights language model as a transformers causal LM.

Against the native model (:class:`~fastweights.models.FWPModel`): the logits (log-probabilities with the adaptive
softmax), a chunk forward against token-by-token cached forwards, greedy ``generate`` against ``model.generate``
with ``top_k=1``, left padding against the unpadded rows; the cache's size after 8 and after 200 generated tokens;
the save/load round trip bitwise; the Auto classes; ``fastweights export`` end to end on tiny runs trained here,
and its one-line errors. Nothing is downloaded (HF_HUB_OFFLINE)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from fastweights.cli import main  # noqa: E402
from fastweights.hf import FastWeightsCache, FastWeightsConfig, FastWeightsForCausalLM  # noqa: E402
from fastweights.layers import layer_names  # noqa: E402
from fastweights.models import ModelConfig, build_model  # noqa: E402

from .helpers import cli_env  # noqa: E402
from .test_lm import TINY, TINY_FLAGS, write_corpus  # noqa: E402

V = 40
FWPS = [name for name in layer_names() if name != "transformer"]  # constant-size state: every FWP and the LSTM


def tiny_native(layer: str, seed: int = 0, **fields):
    torch.manual_seed(seed)
    cfg = dict(layer=layer, vocab_size=V, d_model=16, num_layers=2, num_heads=2, d_ff=32)
    cfg.update(fields)
    return build_model(**cfg).eval()


def tiny_pair(layer: str, **fields):
    native = tiny_native(layer, **fields)
    return native, FastWeightsForCausalLM.from_native(native).eval()


def ids_for(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# one softmax variant per layer: plain tied, plain untied, adaptive softmax (tied), so every head is covered
VARIANTS = [dict(), dict(tie_embeddings=False), dict(adaptive_softmax=[8, 20])]
CASES = [(name, VARIANTS[i % 3]) for i, name in enumerate(layer_names())] + [("transformer", dict(adaptive_softmax=[10]))]


def case_id(case):
    name, fields = case
    return name + ("-asm" if "adaptive_softmax" in fields else "-untied" if fields else "")


# ------------------------------------------------------------------------------------------ model vs native

@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_logits_equal_native_and_chunk_equals_cached_steps(case):
    layer, fields = case
    native, hf = tiny_pair(layer, **fields)
    ids = ids_for(2, 9)
    with torch.no_grad():
        want, _ = native(ids)
        out = hf(ids)
        assert torch.equal(out.logits, want)  # the same computation: bitwise
        if "adaptive_softmax" in fields:  # full log-probabilities: normalised over the vocabulary
            torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2, 9))
        assert isinstance(out.cache, FastWeightsCache) and out.cache.seen_tokens == 9
        # token by token, carrying the cache; then two chunks
        cache, steps = None, []
        for t in range(9):
            step = hf(ids[:, t:t + 1], cache=cache)
            steps.append(step.logits)
            cache = step.cache
        torch.testing.assert_close(torch.cat(steps, 1), want, atol=1e-5, rtol=1e-4)
        first = hf(ids[:, :4])
        second = hf(ids[:, 4:], cache=first.cache)
        torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), want, atol=1e-5, rtol=1e-4)
        # labels: the mean next-token cross-entropy, as the native lm_loss computes it
        loss = hf(ids, labels=ids).loss
        native_loss, _ = native.lm_loss(ids[:, :-1], ids[:, 1:])
        torch.testing.assert_close(loss, native_loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[-1], ("rdn", {}), ("delta-lstm", {})], ids=case_id)
def test_greedy_generate_equals_native_top1(case):
    layer, fields = case
    native, hf = tiny_pair(layer, **fields)
    prompt = ids_for(2, 5, seed=3)
    want = native.generate(prompt, 12, top_k=1)
    got = hf.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)
    assert torch.equal(got, want)
    # without the cache: every step reads the whole sequence again; same tokens
    assert torch.equal(hf.generate(prompt, max_new_tokens=6, do_sample=False, eos_token_id=None, use_cache=False),
                       want[:, :11])


@pytest.mark.parametrize("layer", layer_names())
def test_cache_size_is_constant_for_every_fwp(layer):
    _, hf = tiny_pair(layer, d_model=8, num_layers=1, d_ff=16)
    prompt = ids_for(1, 3)
    sizes = {}
    for n in (8, 200):
        out = hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                          return_dict_in_generate=True)
        assert out.sequences.shape == (1, 3 + n)
        cache = out.cache if "cache" in out else out.past_key_values
        assert cache.seen_tokens == 3 + n - 1  # the last token is sampled, not fed
        sizes[n] = cache.nbytes()
    if layer in FWPS:
        assert sizes[8] == sizes[200] > 0
    else:  # the softmax transformer's key/value cache grows by one entry per token
        assert sizes[200] > sizes[8]


@pytest.mark.parametrize("layer", ["transformer", "rdn", "delta-mlp", "lstm"])
def test_left_padding_equals_the_unpadded_rows(layer):
    native, hf = tiny_pair(layer)
    rows = [ids_for(1, 7, seed=5)[0], ids_for(1, 4, seed=6)[0], ids_for(1, 2, seed=7)[0]]
    T = max(len(r) for r in rows)
    batch = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        batch[b, T - len(r):], mask[b, T - len(r):] = r, 1
    with torch.no_grad():
        out = hf(batch, attention_mask=mask)
        for b, r in enumerate(rows):
            want, _ = native(r[None])
            torch.testing.assert_close(out.logits[b, T - len(r):], want[0], atol=1e-5, rtol=1e-4)
        # continuing from the cache: one more token each, the mask covering cached + new columns
        nxt = ids_for(len(rows), 1, seed=8)
        step = hf(nxt, attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1), cache=out.cache)
        for b, r in enumerate(rows):
            want, _ = native(torch.cat([r, nxt[b]])[None])
            torch.testing.assert_close(step.logits[b, -1], want[0, -1], atol=1e-5, rtol=1e-4)
    got = hf.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None)
    for b, r in enumerate(rows):
        assert torch.equal(got[b, T:], native.generate(r[None], 6, top_k=1)[0, len(r):])


def test_bad_inputs_are_one_line_errors():
    _, hf = tiny_pair("deltanet")
    ids = ids_for(2, 4)
    cases = [
        (dict(attention_mask=torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])), "only left padding"),
        (dict(attention_mask=torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1]])), "row 0 has a 0 after a 1"),
        (dict(attention_mask=torch.ones(2, 3)), "attention_mask must be"),
        (dict(attention_mask=torch.full((2, 4), 2)), "only 0 and 1"),
        (dict(position_ids=torch.arange(4)[None]), "position_ids"),
        (dict(output_attentions=True), "output_attentions"),
        (dict(cache=(torch.zeros(1),)), "FastWeightsCache"),
        (dict(labels=ids[:, :3]), "labels must have the shape"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words) as e:
            hf(ids, **kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="vocab_size"):
        hf(torch.tensor([[V]]))  # the native model's own check
    cached = hf(ids).cache  # a row that has started cannot be padded later
    with pytest.raises(ValueError, match="row 1 has a 0 after the row's first 1"):
        hf(ids[:, :1], attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]), cache=cached)
    with pytest.raises(ValueError, match="assisted decoding"):
        hf.generate(ids, max_new_tokens=3, do_sample=False, prompt_lookup_num_tokens=2, eos_token_id=None)
    with pytest.raises(ValueError, match="layer must be one of"):
        FastWeightsConfig(layer="nope")


def test_beam_search_reorders_the_cache():
    native, hf = tiny_pair("delta-rnn")
    prompt = ids_for(1, 4)
    beams = hf.generate(prompt, max_new_tokens=5, num_beams=3, do_sample=False, eos_token_id=None)
    assert beams.shape == (1, 9)
    # the best beam's score, recomputed without a cache, is at least the greedy sequence's
    def logp(seq):
        lp, _ = native.log_prob(seq[:, :-1])
        return lp.gather(-1, seq[:, 1:, None])[0, 3:].sum()
    assert logp(beams) >= logp(native.generate(prompt, 5, top_k=1)) - 1e-5


# ------------------------------------------------------------------------------------------ save / load / Auto

@pytest.mark.parametrize("case", [("deltanet", {}), ("lt", dict(adaptive_softmax=[8, 20])),
                                  ("deltanet", dict(layer_options={"feature_map": "favor"}, tie_embeddings=False)),
                                  ("transformer", dict(layer_options={"window": 4}))], ids=case_id)
def test_save_pretrained_round_trip_is_bitwise(case, tmp_path):
    layer, fields = case
    native, hf = tiny_pair(layer, **fields)
    hf.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "model.safetensors" in files and "config.json" in files
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert type(back) is FastWeightsForCausalLM and not back.training
    assert back.config.model_config() == native.cfg
    mine, theirs = hf.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    if native.cfg.tie_embeddings and native.cfg.adaptive_softmax is None:
        assert back.model.lm_head.weight is back.model.embed.weight  # still one tensor
    ids = ids_for(2, 6)
    with torch.no_grad():
        assert torch.equal(back(ids).logits, native(ids)[0])
    config = transformers.AutoConfig.from_pretrained(tmp_path / "m")
    assert isinstance(config, FastWeightsConfig) and config.model_type == "fastweights"
    assert config.hidden_size == 16 and config.num_hidden_layers == 2


def test_config_round_trips_every_model_config_field():
    mc = ModelConfig(layer="delta-mlp", layer_options={"depth": 1}, vocab_size=50, d_model=12, num_layers=1,
                     num_heads=3, head_dim=5, d_ff=20, dropout=0.1, adaptive_softmax=[10, 30])
    config = FastWeightsConfig.from_model_config(mc, eos_token_id=3)
    again = FastWeightsConfig.from_dict(config.to_dict())
    assert again.model_config() == mc and again.eos_token_id == 3 and not again.tie_word_embeddings
    with pytest.raises(ValueError, match="head 'lm'"):
        FastWeightsConfig.from_model_config(ModelConfig(head="token", num_classes=3))


def test_import_fastweights_registers_when_transformers_loads_later(tmp_path):
    """A fresh process: ``import fastweights`` loads neither torch nor transformers; importing the Auto classes
    afterwards finds the model type registered."""
    code = textwrap.dedent("""
        import sys
        import fastweights
        assert "torch" not in sys.modules and "transformers" not in sys.modules, "import fastweights is not cheap"
        from transformers import AutoConfig, AutoModelForCausalLM
        config = AutoConfig.for_model("fastweights", layer="rdn", vocab_size=20, d_model=8, num_heads=2)
        model = AutoModelForCausalLM.from_config(config)
        print(type(config).__name__, type(model).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=cli_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["FastWeightsConfig", "FastWeightsForCausalLM"]


# ------------------------------------------------------------------------------------------ export

@pytest.fixture(scope="module", autouse=True)
def token_cache(tmp_path_factory):
    """The tokenised-corpus cache of runs loaded for export: a temporary directory, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASTWEIGHTS_CACHE", str(tmp_path_factory.mktemp("token_cache")))
        yield


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    """Two tiny language-model runs: deltanet through the command line (the preset's cutoffs scaled to the tiny
    vocabulary: an adaptive softmax), and the transformer with a full softmax through the library."""
    from fastweights.train.lm import train_lm
    from fastweights.train.lm_config import LMConfig

    root = tmp_path_factory.mktemp("hf_runs")
    data = write_corpus(root / "wikitext")
    asm_run = root / "deltanet"
    assert main(["train", "lm", "--data", str(data), "--cache-dir", str(root / "cache"), *TINY_FLAGS,
                 "--model", "deltanet", "--steps", "6", "--eval-interval", "3", "--out", str(asm_run)]) == 0
    plain = root / "transformer"
    train_lm(LMConfig(data_dir=str(data), cache_dir=str(root / "cache"), model="transformer", steps=4,
                      eval_interval=2, cutoffs=[], out=str(plain), **TINY), progress=False)
    return {"deltanet": asm_run, "transformer": plain}


@pytest.mark.parametrize("which", ["deltanet", "transformer"])
def test_export_end_to_end(lm_runs, which, tmp_path, capsys):
    from fastweights.train.lm import load_lm_run

    run, out = lm_runs[which], tmp_path / "hf"
    out.mkdir()  # an empty directory is fine
    assert main(["export", str(run), "--hf", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["out"] == str(out) and r["checkpoint"] == "best"
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= set(r["files"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left
    cfg, native, corpus, ptr = load_lm_run(run, "best")
    assert r["step"] == ptr["step"] and r["vocab_size"] == len(corpus.vocab)

    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_config() == native.cfg
    assert (model.model.asm is not None) == (which == "deltanet")
    text = "the city was a zebra of the\nriver"
    assert tok(text)["input_ids"] == corpus.encode(text)  # the training ids, <unk> and <eos> included
    assert tok.eos_token_id == corpus.eos_id and tok.unk_token_id == corpus.unk_id
    assert tok.decode(corpus.encode("the city of\nriver")) == " the city of\n river"  # WikiText's layout
    ids = torch.tensor([[corpus.eos_id] + corpus.encode(text)])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, native(ids)[0])
    want = native.generate(ids, 10, top_k=1)
    # the mask is given: transformers would otherwise read every <eos> (the pad token too) as padding
    got = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                         eos_token_id=None)
    assert torch.equal(got, want)

    gen = transformers.pipeline("text-generation", model=str(out))
    sample = gen("the city", max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    prompt = torch.tensor([corpus.encode("the city")])
    greedy = native.generate(prompt, 8, top_k=1)[0, 2:].tolist()
    stop = greedy.index(corpus.eos_id) if corpus.eos_id in greedy else len(greedy)  # generate stops at <eos>
    assert sample.split() == [corpus.vocab[i] for i in greedy[:stop]]


def test_export_errors_are_one_line(lm_runs, tmp_path, capsys):
    def fails(argv, *words):
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("fastweights: error:"), err
        for w in words:
            assert w in err[0], err
    run = lm_runs["deltanet"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    fails(["export", str(run), "--hf", str(full)], "--hf", str(full), "not empty")
    (tmp_path / "file").write_text("x")
    fails(["export", str(run), "--hf", str(tmp_path / "file")], "--hf", "not a directory")
    fails(["export", str(run), "--hf", str(tmp_path / "no" / "such")], "--hf", "does not exist")
    fails(["export", str(run)], "--hf")
    rl = tmp_path / "rl"
    rl.mkdir()
    (rl / "config.json").write_text(json.dumps({"task": "listops"}))
    fails(["export", str(rl), "--hf", str(tmp_path / "a")], str(rl), "export needs a language-model run")
    fails(["export", str(tmp_path / "nope"), "--hf", str(tmp_path / "b")], "no such run directory")
    bare = run.parent / "bare"  # a language-model run without a checkpoint (beside the run: same data paths)
    bare.mkdir()
    (bare / "config.json").write_text((run / "config.json").read_text())
    fails(["export", str(bare), "--hf", str(tmp_path / "c")], "no best checkpoint")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_exported_directory_loads_without_importing_fastweights(lm_runs, tmp_path):
    """``trust_remote_code``: the exported two-line entry points import the installed fastweights, so a process
    that never imports it (e.g. the ``lm_eval`` command) loads the model."""
    out = tmp_path / "hf"
    assert main(["export", str(lm_runs["deltanet"]), "--hf", str(out)]) == 0
    code = textwrap.dedent(f"""
        import sys
        from transformers import AutoModelForCausalLM, AutoTokenizer
        assert "fastweights" not in sys.modules
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        out = model.generate(**tok(["the city"], return_tensors="pt"), max_new_tokens=3, do_sample=False)
        print(type(model).__name__, out.shape[1])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=cli_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:1] == ["FastWeightsForCausalLM"]

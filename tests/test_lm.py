"""Language modelling (issue 5): the WikiText data tier (tokens, vocabulary, cache, download failure), the
LM training loop (scheduler, context modes, resume, NaN, time budget), evaluation (sliding window and carried
state against direct computations), generation and the command line end to end. A tiny synthetic corpus in
the WikiText layout is written per session; nothing is downloaded."""

from __future__ import annotations

import json
import math
import random
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fastweights.cli import main
from fastweights.tasks import wikitext as wt
from fastweights.train.lm import (evaluate_lm, generate_text, make_scheduler, train_lm,
                                  unigram_perplexity, window_spans)
from fastweights.train.lm_config import LMConfig, LMConfigError, scaled_cutoffs

from .helpers import cli_in_process, cli_subprocess, read_records, strip_timing

WORDS = ("the of and in to a was is for on as with by he at from his an were are which it that this be also "
         "first new game city album song river team film war ship station road season series church school").split()


def _corpus_text(rng: random.Random, lines: int, extra: tuple = ()) -> str:
    pool = list(WORDS) + list(extra)
    weights = [1.0 / (i + 1) for i in range(len(pool))]
    out = []
    for n in range(lines):
        r = rng.random()
        if r < 0.15:
            out.append(" ")  # the release's empty lines hold one space
        elif r < 0.25:
            out.append(f" = {' '.join(rng.choices(pool, weights, k=2))} = ")
        else:
            words = rng.choices(pool, weights, k=rng.randint(5, 25))
            if rng.random() < 0.2:
                words[rng.randrange(len(words))] = "<unk>"
            out.append(" " + " ".join(words) + " . ")
    return "\n".join(out) + "\n"


def write_corpus(d: Path, seed: int = 0, train_lines: int = 300) -> Path:
    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    (d / "wiki.train.tokens").write_text(_corpus_text(rng, train_lines), encoding="utf-8")
    (d / "wiki.valid.tokens").write_text(_corpus_text(rng, 40, extra=("zebra", "quasar")), encoding="utf-8")
    (d / "wiki.test.tokens").write_text(_corpus_text(rng, 40, extra=("nebula",)), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("wikitext"))


TINY = dict(preset="tiny", d_model=16, num_layers=1, num_heads=2, head_dim=8, d_ff=32, segment_len=8,
            batch_size=4, warmup_steps=2, eval_tokens=200, eval_batch_size=8, threads=1)
TINY_FLAGS = ["--preset", "tiny", "--d-model", "16", "--layers", "1", "--heads", "2", "--head-dim", "8", "--d-ff",
              "32", "--segment-len", "8", "--batch-size", "4", "--warmup", "2", "--eval-tokens", "200",
              "--eval-batch-size", "8", "--threads", "1"]


records = read_records


# ------------------------------------------------------------------------------------------ data

def test_tokens_vocab_and_oov_counts(corpus_dir, tmp_path):
    c = wt.load_corpus(corpus_dir, cache_root=tmp_path / "cache")
    for split in ("train", "valid", "test"):
        lines = (corpus_dir / wt.SPLIT_FILES[split]).read_text().splitlines()
        assert len(c[split]) == sum(len(ln.split()) + 1 for ln in lines) == wt.count_tokens(
            corpus_dir / wt.SPLIT_FILES[split])
        assert int((np.asarray(c[split]) == c.eos_id).sum()) == len(lines)  # one <eos> per line, empty ones too
    counts = np.bincount(np.asarray(c.train), minlength=len(c.vocab))
    assert all(counts[i] >= counts[i + 1] for i in range(len(counts) - 1))  # most frequent first
    assert wt.UNK in c.vocab and wt.EOS in c.vocab and len(set(c.vocab)) == len(c.vocab)
    valid_words = (corpus_dir / "wiki.valid.tokens").read_text().split()
    assert c.meta["oov"]["valid"] == sum(w in ("zebra", "quasar") for w in valid_words) > 0
    assert c.meta["oov"]["train"] == 0
    assert c.meta["unk"]["valid"] == c.meta["oov"]["valid"] + valid_words.count("<unk>")
    ids = c.encode("the city of zebra\nwas")
    assert ids == [c.word_to_id["the"], c.word_to_id["city"], c.word_to_id["of"], c.unk_id, c.eos_id,
                   c.word_to_id["was"]]
    assert c.decode(ids) == "the city of <unk>\nwas"


def test_cache_is_reused_and_invalidated_by_a_changed_file(corpus_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for name in wt.SPLIT_FILES.values():
        (d / name).write_bytes((corpus_dir / name).read_bytes())
    cache = tmp_path / "cache"
    first = wt.load_corpus(d, cache_root=cache)
    second = wt.load_corpus(d, cache_root=cache)
    assert not first.from_cache and second.from_cache and second.cache_dir == first.cache_dir
    assert isinstance(second.train, np.memmap) and second.vocab == first.vocab
    assert np.array_equal(second.valid, first.valid)
    with open(d / "wiki.valid.tokens", "a") as f:
        f.write(" the city .\n")
    third = wt.load_corpus(d, cache_root=cache)
    assert not third.from_cache and third.cache_dir != first.cache_dir and len(third.valid) == len(first.valid) + 4
    # --train-file: another training file gives another vocabulary and key
    (tmp_path / "prefix.tokens").write_text(" the city was a city .\n")
    small = wt.load_corpus(d, train_file=tmp_path / "prefix.tokens", cache_root=cache)
    assert sorted(small.vocab) == sorted(["the", "city", "was", "a", ".", "<eos>", "<unk>"])
    assert small.meta["oov"]["valid"] > 0 and small.cache_dir not in (first.cache_dir, third.cache_dir)
    # a damaged cache is rebuilt, not trusted
    want, damaged = np.array(third.test), third.cache_dir
    del third
    (damaged / "test.npy").unlink()
    (damaged / "test.npy").write_bytes(b"garbage")
    again = wt.load_corpus(d, cache_root=cache)
    assert not again.from_cache and np.array_equal(again.test, want)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary directories left


def test_missing_files_give_one_line_errors(tmp_path, capsys):
    with pytest.raises(wt.WikiTextError, match="wiki.train.tokens: no such file.*--train-file"):
        wt.load_corpus(tmp_path, cache_root=tmp_path / "c")
    rc = main(["train", "lm", "--data", str(tmp_path / "nope"), *TINY_FLAGS, "--out", str(tmp_path / "r")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("fastweights: error: --data:"), lines
    rc = main(["train", "lm", "--data", str(tmp_path), "--train-file", str(tmp_path / "x.tokens"), *TINY_FLAGS,
               "--out", str(tmp_path / "r")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("fastweights: error: --train-file:"), lines


def test_download_without_a_network_fails_with_one_line(tmp_path, capsys):
    with pytest.raises(wt.WikiTextError, match="cannot download http://127.0.0.1:9/"):
        wt.download(tmp_path / "d", url="http://127.0.0.1:9/wikitext-103-v1.zip", timeout=5)
    rc = main(["data", "wikitext-103", "--out", str(tmp_path / "d"), "--url", "http://127.0.0.1:9/x.zip",
               "--timeout", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot download" in err[0] and "network" in err[0]
    assert not [p for p in (tmp_path / "d").iterdir()]  # nothing half-written


def test_download_unpacks_and_verifies_an_archive(corpus_dir, tmp_path):
    archive = tmp_path / "wt.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in wt.SPLIT_FILES.values():
            z.write(corpus_dir / name, f"wikitext-103/{name}")
    sums = {n: wt.sha256_file(corpus_dir / n) for n in wt.SPLIT_FILES.values()}  # every file is verified
    got = wt.download(tmp_path / "ok", url=archive.as_uri(), expected_sha256=sums)
    assert got["wiki.valid.tokens"] == sums["wiki.valid.tokens"]
    assert (tmp_path / "ok" / "wiki.train.tokens").read_bytes() == (corpus_dir / "wiki.train.tokens").read_bytes()
    with pytest.raises(wt.WikiTextError, match="SHA-"):  # the official checksums do not fit this archive
        wt.download(tmp_path / "bad", url=archive.as_uri())
    assert not list((tmp_path / "bad").iterdir())


# ------------------------------------------------------------------------------------------ config, schedule

def test_presets_and_scaled_cutoffs():
    small = LMConfig(data_dir="d")
    assert (small.d_model, small.num_layers, small.num_heads, small.head_dim, small.d_ff, small.segment_len) == \
        (128, 16, 8, 16, 2048, 256)
    assert (small.lr, small.warmup_steps, small.grad_clip, small.dropout) == (2.5e-4, 2000, 0.25, 0.1)
    medium = LMConfig(data_dir="d", preset="medium")
    assert (medium.d_model, medium.num_heads, medium.head_dim, medium.segment_len) == (256, 8, 32, 384)
    assert scaled_cutoffs(267_735) == [20_000, 40_000, 200_000]
    assert scaled_cutoffs(34_147) == [2551, 5102, 25508]
    assert scaled_cutoffs(5) == [1, 4] and scaled_cutoffs(1) is None
    cfg = LMConfig(data_dir="d", **TINY)
    assert LMConfig.from_dict(json.loads(cfg.to_json())) == cfg
    mc = cfg.model_config(1000)
    assert mc.adaptive_softmax == [75, 149, 747] and mc.tie_embeddings and mc.head == "lm"
    assert LMConfig(data_dir="d", model="transformer", **TINY).model_config(100).layer_options == {"window": 8}


@pytest.mark.parametrize("field,value", [("preset", "huge"), ("model", "nope"), ("steps", 0), ("lr", -1.0),
                                         ("segment_len", 0), ("budget_clock", "gpu"), ("dropout", 1.0),
                                         ("warmup_steps", 10**9), ("carry_state", "yes"), ("eval_tokens", -1),
                                         ("grad_clip", float("nan")), ("task", "listops")])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(LMConfigError) as e:
        LMConfig(data_dir="d", **{field: value})
    assert isinstance(e.value, ValueError) and e.value.field == field and field in str(e.value)


def test_scheduler_is_linear_warmup_then_cosine():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = make_scheduler(opt, warmup_steps=10, total_steps=110)
    assert isinstance(sched, torch.optim.lr_scheduler.SequentialLR)
    lrs = []
    for _ in range(110):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(0.91) and lrs[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # rising linearly to the peak at step 10
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then falling
    for s in (10, 35, 60, 85, 109):  # the cosine from 1 to 0 over 100 steps
        assert lrs[s] == pytest.approx(0.5 * (1 + math.cos(math.pi * (s - 10) / 100)), abs=1e-6)


# ------------------------------------------------------------------------------------------ evaluation

@pytest.mark.parametrize("n,window,stride", [(1, 4, 4), (10, 4, 4), (10, 4, 1), (10, 4, 3), (37, 8, 5), (5, 100, 50)])
def test_window_spans_score_every_word_exactly_once(n, window, stride):
    spans = window_spans(n, window, stride)
    scored = [i for _, end, first in spans for i in range(first, end)]
    assert scored == list(range(n))
    for k, (begin, end, first) in enumerate(spans):
        assert end - begin <= window and begin <= first
        if k > 0:
            assert first - begin >= min(window - stride, first)  # at least window - stride words of context


def _small_model(layer="deltanet", vocab=40):
    from fastweights.models import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(layer=layer, vocab_size=vocab, d_model=16, num_layers=2, num_heads=2,
                                   head="lm", adaptive_softmax=[10, 20])).eval()


@pytest.mark.parametrize("layer", ["deltanet", "delta-rnn", "lstm"])
def test_eval_modes_equal_direct_computations(layer):
    model = _small_model(layer)
    ids = np.random.default_rng(0).integers(0, 40, size=50).astype(np.int32)
    eos = 3
    inp = torch.tensor([eos] + ids[:-1].tolist())[None]
    tgt = torch.tensor(ids.tolist(), dtype=torch.long)[None]
    with torch.no_grad():
        direct = float(model.lm_loss(inp, tgt, reduction="sum")[0]) / 50
        segs = sum(float(model.lm_loss(inp[:, s:s + 8], tgt[:, s:s + 8], reduction="sum")[0]) for s in range(0, 50, 8))
        # one window of 12 ending at word 30, scoring words 27..29 only
        part = model.lm_loss(inp[:, 18:30], tgt[:, 18:30], reduction="none")[0][0, -3:]
    whole = evaluate_lm(model, ids, eos, "window", window=64, stride=64)
    assert whole["tokens"] == 50 and whole["loss"] == pytest.approx(direct, rel=1e-5)
    assert whole["perplexity"] == pytest.approx(math.exp(direct), rel=1e-5)
    indep = evaluate_lm(model, ids, eos, "window", window=8, stride=8, batch_size=3)
    assert indep["loss"] == pytest.approx(segs / 50, rel=1e-5)
    carry = evaluate_lm(model, ids, eos, "carry", window=7, batch_size=1)  # 8 segments carrying = one pass
    assert carry["tokens"] == 50 and carry["loss"] == pytest.approx(direct, rel=1e-4)
    slide = evaluate_lm(model, ids, eos, "window", window=12, stride=3, batch_size=4)
    assert slide["tokens"] == 50
    spans = window_spans(50, 12, 3)
    assert (18, 30, 27) in spans
    total = 0.0
    with torch.no_grad():
        for b, e, f in spans:
            nll = model.lm_loss(inp[:, b:e], tgt[:, b:e], reduction="none")[0][0]
            total += float(nll[f - b:].sum())
            if (b, e) == (18, 30):
                torch.testing.assert_close(nll[f - b:], part)
    assert slide["loss"] == pytest.approx(total / 50, rel=1e-5)
    two = evaluate_lm(model, ids, eos, "carry", window=7, batch_size=2)  # two parts, each starting afresh
    assert two["tokens"] == 50


def test_unigram_perplexity():
    train = np.array([0, 0, 1, 2], dtype=np.int32)
    r = unigram_perplexity(train, np.array([0, 1]), vocab_size=4, alpha=1.0)  # counts 3,2,2,1 of 8
    assert r["perplexity"] == pytest.approx(math.exp(-(math.log(3 / 8) + math.log(2 / 8)) / 2))


# ------------------------------------------------------------------------------------------ training

def _cfg(corpus_dir, tmp_path, name, **kw):
    base = dict(data_dir=str(corpus_dir), cache_dir=str(tmp_path / "cache"), model="deltanet", steps=12,
                eval_interval=6, log_interval=1, out=str(tmp_path / name), **TINY)
    base.update(kw)
    return LMConfig(**base)


def test_carry_state_differs_from_independent_segments_and_is_checkpointed(corpus_dir, tmp_path):
    ind = train_lm(_cfg(corpus_dir, tmp_path, "ind", steps=4, eval_interval=4), progress=False)
    car = train_lm(_cfg(corpus_dir, tmp_path, "car", steps=4, eval_interval=4, carry_state=True), progress=False)
    assert ind["status"] == car["status"] == "completed"
    a, b = records(tmp_path / "ind", "train"), records(tmp_path / "car", "train")
    assert a[0]["loss"] == b[0]["loss"]  # the first segment starts fresh in both modes
    assert a[1]["loss"] != b[1]["loss"]  # later ones see the previous segment's state when carrying
    from fastweights.train import load_checkpoint

    st_car = load_checkpoint(tmp_path / "car" / "checkpoints")[1]
    st_ind = load_checkpoint(tmp_path / "ind" / "checkpoints")[1]
    assert st_ind["carry"] == [None]
    carried = st_car["carry"][0]
    assert carried["pos"].tolist() == [32] * 4 and not carried["layers"][0][0].requires_grad
    cfg = json.loads((tmp_path / "car" / "config.json").read_text())
    assert cfg["carry_state"] and cfg["vocab_size"] > 10 and cfg["data_sha256"]["valid"]


def test_time_budget_on_the_cpu_clock_and_the_run_directory(corpus_dir, tmp_path, monkeypatch):
    import time

    readings = iter(range(0, 10**6))
    monkeypatch.setattr(time, "process_time", lambda: float(next(readings)))
    summary = train_lm(_cfg(corpus_dir, tmp_path, "b", steps=1000, time_budget_minutes=0.05, budget_clock="cpu",
                            model="lstm"), progress=True)
    assert summary["stopped"] == "time budget" and 2 <= summary["step"] <= 4
    run = tmp_path / "b"
    assert (run / "curves.png").stat().st_size > 1000 and list((run / "tensorboard").glob("events.*"))
    assert records(run, "valid")[-1]["step"] == summary["step"] and "ppl" in records(run, "valid")[-1]


def test_resume_after_kill_9_is_bitwise_with_carried_state(corpus_dir, tmp_path, capsys):
    """The killed run is a real process; the reference and the resumption run in this one."""
    args = ["train", "lm", "--data", str(corpus_dir), "--cache-dir", str(tmp_path / "cache"), "--model", "deltanet",
            *TINY_FLAGS, "--steps", "14", "--eval-interval", "7", "--save-interval", "3", "--log-interval", "1",
            "--carry-state"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    cli_in_process(capsys, *args, "--out", str(ref), check=0)
    killed = cli_subprocess(*args, "--out", str(run), fault="kill-at-step:11")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 9
    cli_in_process(capsys, "train", "lm", "--out", str(run), "--resume", check=0)
    assert strip_timing(records(run)) == strip_timing(records(ref))
    assert [r["step"] for r in records(run, "train")] == list(range(1, 15))


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(corpus_dir, tmp_path, capsys,
                                                                        monkeypatch):
    run = tmp_path / "run"
    monkeypatch.setenv("FASTWEIGHTS_FAULT", "nan-at-step:6")
    rc = main(["train", "lm", "--data", str(corpus_dir), "--cache-dir", str(tmp_path / "cache"), *TINY_FLAGS,
               "--model", "lt", "--steps", "12", "--eval-interval", "4", "--out", str(run)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert rc == 1 and "Traceback" not in err
    assert len(lines) == 1 and "loss is nan at step 6" in lines[0] and "step 4" in lines[0], lines
    assert json.loads((run / "checkpoints" / "last.json").read_text())["step"] == 4
    assert max(r["step"] for r in records(run)) <= 5


@pytest.mark.parametrize("args,flag", [(["--preset", "huge"], "--preset"), (["--steps", "0"], "--steps"),
                                       (["--lr", "x"], "--lr"), (["--model", "foo"], "--model"),
                                       (["--segment-len", "0"], "--segment-len"),
                                       (["--budget-clock", "gpu"], "--budget-clock"),
                                       (["--warmup", "50", "--steps", "10"], "--warmup"),
                                       (["--time-budget", "-1"], "--time-budget"),
                                       (["--heads", "3", "--head-dim", "0"], "--head-dim")])
def test_cli_bad_flag_is_one_line_naming_the_flag(args, flag, corpus_dir, tmp_path, capsys):
    rc = main(["train", "lm", "--data", str(corpus_dir), "--cache-dir", str(tmp_path / "c"), *args,
               "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"fastweights: error: {flag}:"), err
    assert not (tmp_path / "r").exists()


def test_cli_end_to_end_train_eval_generate(corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "lm", "--data", str(corpus_dir), "--cache-dir", str(tmp_path / "cache"), *TINY_FLAGS,
                 "--model", "deltanet", "--steps", "10", "--eval-interval", "5", "--out", str(run)]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 10 and summary["words_per_s"] > 0
    assert main(["eval", str(run), "--split", "valid", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    n_valid = wt.count_tokens(corpus_dir / "wiki.valid.tokens")
    assert {"split", "tokens", "perplexity", "mode"} <= set(r)
    assert r["split"] == "valid" and r["tokens"] == n_valid and r["mode"] == "window" and r["stride"] == 4
    assert 1 < r["perplexity"] < 10 * r["vocab_size"] and r["oov"] > 0
    assert main(["eval", str(run), "--split", "test", "--mode", "carry", "--window", "16", "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["mode"] == "carry" and c["tokens"] == wt.count_tokens(corpus_dir / "wiki.test.tokens")
    assert main(["eval", str(run)]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["generate", str(run), "--prompt", "the city", "--tokens", "12", "--seed", "1", "--top-k", "5",
                 "--json"]) == 0
    g = json.loads(capsys.readouterr().out)
    assert g["tokens"] == 12 and g["prompt"] == "the city" and g["tokens_per_s"] > 0
    again = generate_text(run, "the city", 12, top_k=5, seed=1)
    assert again["text"] == g["text"]  # seeded
    assert main(["generate", str(run), "--tokens", "5"]) == 0  # no prompt: from an <eos> (printed as new lines)
    out = capsys.readouterr()
    assert out.out.count("\n") + len(out.out.split()) >= 5 and "5 words" in out.err
    bench = tmp_path / "bench.json"
    assert main(["bench", "generate", str(run), "--contexts", "8,40", "--tokens", "3", "--repeats", "1",
                 "--json", str(bench)]) == 0
    rows = json.loads(bench.read_text())["rows"]
    assert "tokens/s" in capsys.readouterr().err
    assert [r["context"] for r in rows] == [8, 40] and all(r["tokens_per_s"] > 0 for r in rows)
    # bad eval/generate flags: one line naming the flag
    for argv, flag in ((["eval", str(run), "--stride", "100"], "--stride"),
                       (["eval", str(run), "--window", "x"], "--window"),
                       (["generate", str(run), "--tokens", "0"], "--tokens"),
                       (["generate", str(run), "--temperature", "-1"], "--temperature")):
        rc = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and err[0].startswith("fastweights: error:") and flag in err[0], err


def test_eval_lm_flags_are_refused_on_an_algorithmic_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"task": "listops"}))
    assert main(["eval", str(tmp_path), "--mode", "carry"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastweights: error: --mode:")


def test_generation_state_is_constant_size_for_fwps(corpus_dir, tmp_path):
    model = _small_model("deltanet")
    _, s1 = model.hidden(torch.zeros(1, 10, dtype=torch.long))
    _, s2 = model.hidden(torch.zeros(1, 500, dtype=torch.long))
    sizes = lambda s: [t.numel() for t in torch.utils._pytree.tree_leaves(s)]
    assert sizes(s1) == sizes(s2)

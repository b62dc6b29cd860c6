"""Bad input: one line, before any work (issue 20). A table of bad command lines over every command and
sub-command; each must exit 2 (or its documented non-zero code) with exactly one line on stderr naming the
flag (or the directory) at fault, no traceback, and nothing written: every case runs with a fresh empty
working directory that must stay as the case set it up, next to small fixture runs (made once per module)
that must stay untouched.

Cases run in this process (``cli_in_process``) with the entry points of real work (training, benchmarks,
data generation, downloads, evaluation) replaced by tripwires, so a check that comes too late fails the case
at once instead of starting the work; the few cases whose check lives at the start of the work itself say so
(``work=True``). A handful of cases also run as real subprocesses."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .helpers import cli_env, cli_in_process
from .test_lm import write_corpus

MAX_SEED = 2**63 - 1


class WorkStarted(Exception):
    """Raised by a tripwire: the command began its real work although its input was bad."""


def C(argv: str, needle: str | None, *, code: int = 2, work: bool = False, setup=None, xfail: str | None = None,
      id: str | None = None):
    """One bad command line. ``needle``: text the error line must contain (the flag, or the run directory;
    ``{...}`` fixture names are filled in); ``work``: the check happens at the start of the work (no
    tripwire); ``setup(cwd)``: files the case needs in its working directory; ``xfail``: the fix the case is
    waiting for (strict)."""
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(argv, needle, code, work, setup, marks=marks, id=id or argv[:90])


def _file(name: str, text: str):
    def setup(cwd: Path):
        (cwd / name).write_text(text)
    return setup


def _dir(name: str):
    def setup(cwd: Path):
        (cwd / name).mkdir()
    return setup


# Fixture names filled into the command lines: {sup} a finished code-exec run, {mem} a memory-env RL run,
# {lm} a language-model run, {corpus} its data, {data} a 'fastweights data code-exec' directory, {notrun} an
# existing directory that is not a run, {badcfg} a directory whose config.json is not JSON, {nokind} one whose
# config.json names no run kind, {benchjson} a file that is not a 'bench ops --json' file.
TRAIN_KINDS = ("code-exec", "listops", "lm", "memory", "atari")

CASES = [
    # ---- the command line itself
    C("", None, id="no-command"),
    C("nope", "nope"),
    C("train", None, id="train-no-task"),
    C("train nope", "nope"),
    C("bench", None, id="bench-no-target"),
    C("bench nope", "nope"),
    C("data", None, id="data-no-task"),
    C("train code-exec --no-such-flag 1", "--no-such-flag"),
    C("train memory --encoder mlp", "--encoder"),  # an Atari-only flag
    C("train code-exec --depth 3", "--depth"),  # a ListOps-only flag
]

# ---- every train command: flags shared by all kinds
for k in TRAIN_KINDS:
    CASES += [
        C(f"train {k} --seed -1", "--seed"),
        C(f"train {k} --seed {MAX_SEED + 1}", "--seed"),
        C(f"train {k} --seed x", "--seed"),
        C(f"train {k} --seed 1.5", "--seed"),
        C(f"train {k} --threads 0", "--threads"),
        C(f"train {k} --threads 100000", "--threads"),
        C(f"train {k} --log-interval 0", "--log-interval"),
        C(f"train {k} --save-interval 0", "--save-interval"),
        C(f"train {k} --time-budget 0", "--time-budget"),
        C(f"train {k} --time-budget nan", "--time-budget"),
        C(f"train {k} --time-budget inf", "--time-budget"),
        C(f"train {k} --budget-clock sundial", "--budget-clock"),
        C(f"train {k} --layer-opt nonsense", "--layer-opt"),
        C(f"train {k} --out ''", "--out"),
        C(f"train {k} --config missing.yaml", "--config"),
        C(f"train {k} --config bad.yaml", "--config", setup=_file("bad.yaml", "a: [1, 2\n")),
        C(f"train {k} --config list.yaml", "--config", setup=_file("list.yaml", "- 1\n- 2\n")),
        C(f"train {k} --config unknown.yaml", "--config", setup=_file("unknown.yaml", "no_such_field: 1\n")),
        C(f"train {k} --resume", "--resume"),
        C(f"train {k} --resume --out missing", "missing"),
        C(f"train {k} --resume --out {{notrun}}", "{notrun}"),
        C(f"train {k} --resume --out {{badcfg}}", "{badcfg}"),
        C(f"train {k} --weight-decay -1", "--weight-decay"),
        C(f"train {k} --weight-decay x", "--weight-decay"),
    ]

# ---- supervised and language-model runs: model and optimiser flags (an LM run needs --data first)
for k in ("code-exec", "listops", "lm --data {{corpus}}"):
    CASES += [
        C(f"train {k} --model no-such-layer", "--model"),
        C(f"train {k} --d-model 0", "--d-model"),
        C(f"train {k} --d-model 1000000000", "--d-model"),
        C(f"train {k} --d-model x", "--d-model"),
        C(f"train {k} --layers 100000", "--layers"),
        C(f"train {k} --layers -2", "--layers"),
        C(f"train {k} --heads 0", "--heads"),
        C(f"train {k} --heads 100000", "--heads"),
        C(f"train {k} --dropout 1", "--dropout"),
        C(f"train {k} --dropout -0.1", "--dropout"),
        C(f"train {k} --steps 0", "--steps"),
        C(f"train {k} --steps 2.5", "--steps"),
        C(f"train {k} --steps 1e11", "--steps"),
        C(f"train {k} --batch-size 0", "--batch-size"),
        C(f"train {k} --batch-size 1e9", "--batch-size"),
        C(f"train {k} --lr 0", "--lr"),
        C(f"train {k} --lr -1", "--lr"),
        C(f"train {k} --lr nan", "--lr"),
        C(f"train {k} --lr 100", "--lr"),
        C(f"train {k} --betas 0.9", "--betas"),
        C(f"train {k} --betas 0.9,1.0", "--betas"),
        C(f"train {k} --betas a,b", "--betas"),
        C(f"train {k} --betas ''", "--betas"),
        C(f"train {k} --warmup -1", "--warmup"),
        C(f"train {k} --grad-clip -1", "--grad-clip"),
        C(f"train {k} --eval-interval 0", "--eval-interval"),
        C(f"train {k} --eval-batch-size 0", "--eval-batch-size"),
        C(f"train {k} --layer-opt no_such_option=1", "--layer-opt"),
    ]

# ---- the algorithmic tasks
for k in ("code-exec", "listops"):
    CASES += [
        C(f"train {k} --sizes 1,2", "--sizes"),
        C(f"train {k} --sizes 0,1,1", "--sizes"),
        C(f"train {k} --sizes ''", "--sizes"),
        C(f"train {k} --sizes 1e9,1,1", "--sizes"),
        C(f"train {k} --data-seed -1", "--data-seed"),
        C(f"train {k} --data-seed 4294967296", "--data-seed"),
        C(f"train {k} --epochs 0", "--epochs"),
        C(f"train {k} --steps 10 --epochs 2", "--steps"),
        C(f"train {k} --warmup 10 --steps 10", "--warmup"),
        C(f"train {k} --batch-size 100 --sizes 64,16,16", "--batch-size"),
        C(f"train {k} --data {{data}} --sizes 64,16,16", "--sizes"),
        C(f"train {k} --data {{data}} --data-seed 3", "--data-seed"),
        C(f"train {k} --heads 3 --d-model 128", "--heads"),
        C(f"train {k} --resume --out {{lm}}", "{lm}"),
        C(f"train {k} --resume --out {{mem}}", "{mem}"),
    ]
CASES += [
    C("train code-exec --vars 4", "--vars"),
    C("train code-exec --vars x", "--vars"),
    C("train code-exec --length 1", "--length"),
    C("train code-exec --length 1000000", "--length"),
    C("train code-exec --loss-on everything", "--loss-on"),
    C("train code-exec --data {data} --vars 3", "--vars"),
    C("train code-exec --data {data} --length 8", "--length"),
    C("train code-exec --data missing", "missing"),
    C("train code-exec --data {notrun}", "{notrun}"),
    C("train listops --depth 0", "--depth"),
    C("train listops --depth 1000", "--depth"),
    C("train listops --ops ''", "--ops"),
    C("train listops --ops FOO", "--ops"),
    C("train listops --ops MIN,MIN", "--ops"),
    C("train listops --data {data} --depth 3", "--depth"),
    C("train listops --data {data} --ops MIN", "--ops"),
    C("train listops --resume --out {sup}", "code-exec"),
    C("train code-exec --resume --out {sup} --steps 1", "--steps"),
    C("train code-exec --resume --out {sup} --d-model 32", "--d-model"),
    C("train code-exec --resume --out {sup} --model lstm", "--model"),
    C("train code-exec --resume --out {sup} --sizes 64,16,17", "--sizes"),
    C("train code-exec --resume --out {sup} --epochs 0", "--epochs"),
    C("train code-exec --time-budget 1e8", "--time-budget"),
    C("train code-exec --model deltanet --layer-opt feature_map=nope", "--layer-opt"),
    C("train code-exec --model lstm --layer-opt nu=2", "--layer-opt"),
    C("train code-exec --config neg.yaml", "--d-model", setup=_file("neg.yaml", "d_model: -1\n")),
    C("train code-exec --config str.yaml", "--steps", setup=_file("str.yaml", "steps: many\n")),
    C("train code-exec --config sub", "--config", setup=_dir("sub")),
    C("train code-exec --config bin.yaml", "--config", setup=lambda cwd: (cwd / "bin.yaml").write_bytes(b"\xff\x00")),
]

# ---- language models
CASES += [
    C("train lm", "--data"),
    C("train lm --data {corpus} --preset huge", "--preset"),
    C("train lm --data {corpus} --head-dim 0", "--head-dim"),
    C("train lm --data {corpus} --d-ff 0", "--d-ff"),
    C("train lm --data {corpus} --segment-len 0", "--segment-len"),
    C("train lm --data {corpus} --eval-tokens -1", "--eval-tokens"),
    C("train lm --data {corpus} --min-lr -1", "--min-lr"),
    C("train lm --data {corpus} --min-lr 0.5 --lr 0.1", "--min-lr"),
    C("train lm --data {corpus} --warmup 10 --steps 10", "--warmup"),
    C("train lm --data {corpus} --carry-state maybe", "--carry-state"),
    C("train lm --data missing", "missing"),
    C("train lm --data {notrun}", "{notrun}"),
    C("train lm --data {corpus} --train-file missing.tokens", "missing.tokens"),
    C("train lm --resume --out {sup}", "{sup}"),
    C("train lm --resume --out {mem}", "{mem}"),
    C("train lm --resume --out {lm} --steps 1", "--steps"),
    C("train lm --resume --out {lm} --d-model 32", "--d-model"),
]

# ---- RL: memory and Atari
for k in ("memory", "atari"):
    CASES += [
        C(f"train {k} --core nope", "--core"),
        C(f"train {k} --core-dim 0", "--core-dim"),
        C(f"train {k} --core-dim 1000000000", "--core-dim"),
        C(f"train {k} --core-layers 100000", "--core-layers"),
        C(f"train {k} --core-heads 0", "--core-heads"),
        C(f"train {k} --core-heads 3", "--core-heads"),
        C(f"train {k} --core-ff 0", "--core-ff"),
        C(f"train {k} --features 0", "--features"),
        C(f"train {k} --init uniform", "--init"),
        C(f"train {k} --frames 0", "--frames"),
        C(f"train {k} --frames 1e14", "--frames"),
        C(f"train {k} --frames x", "--frames"),
        C(f"train {k} --batch-size 0", "--batch-size"),
        C(f"train {k} --unroll 0", "--unroll"),
        C(f"train {k} --lr 0", "--lr"),
        C(f"train {k} --lr inf", "--lr"),
        C(f"train {k} --rms-alpha 1", "--rms-alpha"),
        C(f"train {k} --rms-eps 0", "--rms-eps"),
        C(f"train {k} --grad-clip -1", "--grad-clip"),
        C(f"train {k} --entropy-cost -1", "--entropy-cost"),
        C(f"train {k} --baseline-cost nan", "--baseline-cost"),
        C(f"train {k} --discount 1.5", "--discount"),
        C(f"train {k} --reward-clip 0", "--reward-clip"),
        C(f"train {k} --clip-rho 0", "--clip-rho"),
        C(f"train {k} --clip-pg-rho -1", "--clip-pg-rho"),
        C(f"train {k} --actors -1", "--actors"),
        C(f"train {k} --actors 100000", "--actors"),
        C(f"train {k} --actors 3 --batch-size 16", "--actors"),
        C(f"train {k} --actors 0 --envs-per-actor 2", "--envs-per-actor"),
        C(f"train {k} --envs-per-actor 0", "--envs-per-actor"),
        C(f"train {k} --actors 2 --envs-per-actor 3 --batch-size 16", "--envs-per-actor"),
        C(f"train {k} --queue-size 0", "--queue-size"),
        C(f"train {k} --actor-threads 0", "--actor-threads"),
        C(f"train {k} --resume --out {{sup}}", "{sup}"),
        C(f"train {k} --resume --out {{lm}}", "{lm}"),
    ]
CASES += [
    C("train memory --cues 1", "--cues"),
    C("train memory --cues 1e12", "--cues"),
    C("train memory --delay -1", "--delay"),
    C("train memory --delay 1e9", "--delay"),
    C("train memory --resume --out {mem} --frames 16", "--frames"),
    C("train memory --resume --out {mem} --core lstm", "--core"),
    C("train memory --resume --out {mem} --actors 3", "--actors"),
    C("train memory --resume --out {mem} --unroll 4", "--unroll"),
    C("train atari --resume --out {mem}", "memory"),
    C("train atari --game ''", "--game"),
    C("train atari --game 'Po ng'", "--game"),
    C("train atari --frame-skip 0", "--frame-skip"),
    C("train atari --frame-stack 100", "--frame-stack"),
    C("train atari --noop-max -1", "--noop-max"),
    C("train atari --max-episode-frames 0", "--max-episode-frames"),
    C("train atari --episodic-life maybe", "--episodic-life"),
    C("train atari --fire-reset maybe", "--fire-reset"),
    C("train atari --encoder mlp", "--encoder"),
    C("train atari --encoder resnet", "--encoder"),
]

# ---- bench
CASES += [
    C("bench ops --ops ''", "--ops"),
    C("bench ops --ops no_such_op", "--ops"),
    C("bench ops --ops delta_rule,,rdn", "--ops"),
    C("bench ops --shapes ''", "--shapes"),
    C("bench ops --shapes 1x2x3", "--shapes"),
    C("bench ops --shapes 0x1x1x1", "--shapes"),
    C("bench ops --shapes axbxcxd", "--shapes"),
    C("bench ops --shapes 100000x100000x100000x100000", "--shapes"),
    C("bench ops --repeats 0", "--repeats"),
    C("bench ops --threads 0", "--threads"),
    C("bench ops --threads 100000", "--threads"),
    C("bench ops --dtype float16", "--dtype"),
    C("bench ops --json /missing/dir/x.json", "--json"),
    C("bench ops --json missing/x.json", "--json"),
    C("bench ops --json ''", "--json"),
    C("bench ops --json sub", "--json", setup=_dir("sub")),
    C("bench ops --markdown /missing/dir/x.md", "--markdown"),
    C("bench ops --plot /missing/dir/x.png", "--plot"),
    C("bench plot missing.json --out x.png", "missing.json"),
    C("bench plot {benchjson} --out x.png", "{benchjson}"),
    C("bench plot {notrun} --out x.png", "{notrun}"),
    C("bench plot x.json --out /missing/dir/x.png", "--out"),
    C("bench step --layer nope", "--layer"),
    C("bench step --layer ''", "--layer"),
    C("bench step --tokens 10", "--tokens"),
    C("bench step --tokens 1e9", "--tokens"),
    C("bench step --d-model 0", "--d-model"),
    C("bench step --layers 100000", "--layers"),
    C("bench step --heads 0", "--heads"),
    C("bench step --heads 3 --d-model 128", "--heads"),
    C("bench step --threads 0", "--threads"),
    C("bench step --d-model 65536 --layers 1024 --heads 4", "--d-model"),
    C("bench step --json /missing/dir/x.json", "--json"),
    C("bench generate {sup}", "{sup}"),
    C("bench generate {mem}", "{mem}"),
    C("bench generate missing", "missing"),
    C("bench generate {notrun}", "{notrun}"),
    C("bench generate {lm} {sup}", "{sup}"),
    C("bench generate ''", "RUN_DIR"),
    C("bench generate {lm} --contexts ''", "--contexts"),
    C("bench generate {lm} --contexts 0", "--contexts"),
    C("bench generate {lm} --contexts 64,x", "--contexts"),
    C("bench generate {lm} --tokens 0", "--tokens"),
    C("bench generate {lm} --repeats 0", "--repeats"),
    C("bench generate {lm} --threads 0", "--threads"),
    C("bench generate {lm} --json /missing/dir/x.json", "--json"),
]

# ---- models
CASES += [
    C("models --d-model 0", "--d-model"),
    C("models --d-model 1000000000", "--d-model"),
    C("models --layers 100000", "--layers"),
    C("models --heads 0", "--heads"),
    C("models --heads 3", "--heads"),
    C("models --head-dim 0", "--head-dim"),
    C("models --d-ff 0", "--d-ff"),
    C("models --vocab 0", "--vocab"),
    C("models --vocab 1e12", "--vocab"),
    C("models --adaptive-softmax 5,3", "--adaptive-softmax"),
    C("models --adaptive-softmax x", "--adaptive-softmax"),
    C("models --adaptive-softmax ''", "--adaptive-softmax"),
    C("models --adaptive-softmax 2000 --vocab 1000", "--adaptive-softmax"),
    C("models --head nope", "--head"),
    C("models --num-classes 0", "--num-classes"),
    C("models --json /missing/dir/x.json", "--json"),
    C("models --d-model 65536 --layers 1024", "--d-model"),
]

# ---- data
for t in ("code-exec", "listops"):
    CASES += [
        C(f"data {t}", "--out"),
        C(f"data {t} --out ''", "--out"),
        C(f"data {t} --out f.txt", "--out", setup=_file("f.txt", "x")),
        C(f"data {t} --out d --seed -1", "--seed"),
        C(f"data {t} --out d --seed 4294967296", "--seed"),
        C(f"data {t} --out d --sizes 0,0,0", "--sizes"),
        C(f"data {t} --out d --sizes 1,2", "--sizes"),
        C(f"data {t} --out d --sizes -1,1,1", "--sizes"),
        C(f"data {t} --out d --sizes 1e9,1,1", "--sizes"),
    ]
CASES += [
    C("data code-exec --out {data}", "--out"),
    C("data code-exec --out d --vars 4", "--vars"),
    C("data code-exec --out d --length 1", "--length"),
    C("data code-exec --out d --length x", "--length"),
    C("data listops --out d --depth 0", "--depth"),
    C("data listops --out d --depth 10000", "--depth"),
    C("data listops --out d --ops ''", "--ops"),
    C("data listops --out d --ops FOO", "--ops"),
    C("data listops --out d --ops MIN,MIN", "--ops"),
    C("data wikitext-103 --out ''", "--out"),
    C("data wikitext-103 --out d --timeout 0", "--timeout"),
    C("data wikitext-103 --out d --timeout nan", "--timeout"),
    C("data wikitext-103 --out d --timeout -5", "--timeout"),
    C("data wikitext-103 --out d --url not-a-url", "--url"),
    C("data wikitext-103 --out d --url ''", "--url"),
]

# ---- compare
CASES += [
    C("compare missing", "missing"),
    C("compare {notrun}", "{notrun}"),
    C("compare {badcfg}", "{badcfg}"),
    C("compare {nokind}", "{nokind}"),
    C("compare ''", "RUN_DIR"),
    C("compare {sup} missing", "missing"),
    C("compare {lm} --test", "--test"),
    C("compare {mem} --test", "--test"),
    C("compare {sup} {mem} --test", "--test"),
    C("compare {sup} --plot /missing/dir/x.png", "--plot"),
    C("compare {sup} --markdown /missing/dir/x.md", "--markdown"),
    C("compare {sup} --metric no_such_metric", "--metric"),
    C("compare {sup} --plot sub", "--plot", setup=_dir("sub")),
    C("compare {sup} --markdown ''", "--markdown"),
]

# ---- eval
CASES += [
    C("eval missing", "missing"),
    C("eval {notrun}", "{notrun}"),
    C("eval {badcfg}", "{badcfg}"),
    C("eval {nokind}", "{nokind}"),
    C("eval ''", "RUN_DIR"),
    C("eval {sup} --episodes 3", "--episodes"),
    C("eval {sup} --sample", "--sample"),
    C("eval {sup} --mode carry", "--mode"),
    C("eval {sup} --window 8", "--window"),
    C("eval {sup} --stride 4", "--stride"),
    C("eval {sup} --batch-size 4", "--batch-size"),
    C("eval {sup} --split nope", "--split"),
    C("eval {sup} --checkpoint nope", "--checkpoint"),
    C("eval {mem} --window 8", "--window"),
    C("eval {mem} --mode carry", "--mode"),
    C("eval {mem} --episodes 0", "--episodes"),
    C("eval {mem} --episodes 1e7", "--episodes"),
    C("eval {mem} --split valid", "--split"),
    C("eval {lm} --episodes 2", "--episodes"),
    C("eval {lm} --sample", "--sample"),
    C("eval {lm} --window 0", "--window"),
    C("eval {lm} --window 8 --stride 16", "--stride"),
    C("eval {lm} --mode sideways", "--mode"),
    C("eval {lm} --batch-size 0", "--batch-size"),
    C("eval {lm} --threads 0", "--threads"),
    C("eval {lm} --window 1e9", "--window"),
    C("eval {lm} --stride 0", "--stride"),
]

# ---- generate
CASES += [
    C("generate {sup}", "{sup}"),
    C("generate {mem}", "{mem}"),
    C("generate missing", "missing"),
    C("generate {notrun}", "{notrun}"),
    C("generate ''", "RUN_DIR"),
    C("generate {lm} --tokens -1", "--tokens"),
    C("generate {lm} --tokens 1e9", "--tokens"),
    C("generate {lm} --temperature 0", "--temperature"),
    C("generate {lm} --temperature inf", "--temperature"),
    C("generate {lm} --temperature nan", "--temperature"),
    C("generate {lm} --temperature 1e-45", "--temperature"),
    C("generate {lm} --temperature x", "--temperature"),
    C("generate {lm} --top-k 0", "--top-k"),
    C("generate {lm} --seed -1", "--seed"),
    C("generate {lm} --seed 1e30", "--seed"),
    C("generate {lm} --checkpoint nope", "--checkpoint"),
    C("generate {lm} --threads 0", "--threads"),
]

# ---- migrate
CASES += [
    C("migrate missing", "missing"),
    C("migrate {notrun}", "{notrun}"),
    C("migrate {badcfg}", "{badcfg}"),
    C("migrate {nokind}", "{nokind}"),
    C("migrate ''", "RUN_DIR"),
    C("migrate f.txt", "f.txt", setup=_file("f.txt", "x")),
]


# ------------------------------------------------------------------------------------------ fixtures

SUBPROCESS_CASES = [  # the same checks with a real interpreter, its own stderr and exit code (no fixture runs)
    ("bench ops --json /missing/dir/x.json", "--json"),
    ("train code-exec --d-model 1000000000", "--d-model"),
    ("eval missing", "missing"),
]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """The runs and directories the cases name, made once (by the command line, in this process), and the
    subprocess cases, started first so that their interpreters start up while the runs are made."""
    root = tmp_path_factory.mktemp("bad_inputs")
    procs = []
    for i, (argv, needle) in enumerate(SUBPROCESS_CASES):
        cwd = tmp_path_factory.mktemp(f"subprocess{i}")
        p = subprocess.Popen([sys.executable, "-m", "fastweights.cli", *shlex.split(argv)], cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=cli_env(FASTWEIGHTS_CACHE=str(root / "cache")))
        procs.append((p, cwd, argv, needle))
    old = os.getcwd()
    os.chdir(root)
    try:
        names = _make_fixtures(root)
    finally:
        os.chdir(old)
    yield root, names, procs
    for p, *_ in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _run_fixture(*argv):
    from fastweights.cli import main

    code = main([str(a) for a in argv])
    assert code == 0, f"fixture command failed: fastweights {' '.join(map(str, argv))}"


def _make_fixtures(root: Path) -> dict:
    names = {"sup": root / "sup", "mem": root / "mem", "lm": root / "lm", "corpus": root / "corpus",
             "data": root / "data", "notrun": root / "notrun", "badcfg": root / "badcfg", "nokind": root / "nokind",
             "benchjson": root / "bench.json", "cache": root / "cache"}
    _run_fixture("train", "code-exec", "--vars", 3, "--length", 8, "--sizes", "64,16,16", "--steps", 2, "--batch-size",
                 8, "--d-model", 16, "--heads", 2, "--layers", 1, "--eval-interval", 2, "--model", "deltanet",
                 "--threads", 1, "--out", names["sup"])
    _run_fixture("train", "memory", "--actors", 0, "--frames", 160, "--batch-size", 2, "--unroll", 8, "--core-dim",
                 16, "--core-heads", 2, "--core-layers", 1, "--features", 16, "--save-interval", 5, "--threads", 1,
                 "--out", names["mem"])
    write_corpus(names["corpus"], train_lines=60)
    _run_fixture("train", "lm", "--data", names["corpus"], "--cache-dir", names["cache"], "--preset", "tiny",
                 "--d-model", 16, "--layers", 1, "--heads", 2, "--head-dim", 8, "--d-ff", 32, "--segment-len", 8,
                 "--batch-size", 4, "--warmup", 1, "--steps", 2, "--eval-interval", 2, "--eval-tokens", 100,
                 "--eval-batch-size", 8, "--threads", 1, "--model", "deltanet", "--out", names["lm"])
    _run_fixture("data", "code-exec", "--out", names["data"], "--vars", 3, "--length", 8, "--sizes", "64,16,16")
    names["notrun"].mkdir()
    names["badcfg"].mkdir()
    (names["badcfg"] / "config.json").write_text("{not json")
    names["nokind"].mkdir()
    (names["nokind"] / "config.json").write_text(json.dumps({"kind": "cooking", "model": "x"}))
    names["benchjson"].write_text(json.dumps({"no": "rows"}))
    return {k: str(v) for k, v in names.items()}


def _tree(root: Path) -> dict:
    """Every file and directory under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p.relative_to(root))] = (p.is_dir(), st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


TRIPWIRES = {  # module, attribute: the entry points of real work
    "fastweights.train.runs": "train",
    "fastweights.bench.ops": "run_benchmark",
    "fastweights.bench.step": "step_benchmark",
    "fastweights.tasks": "make_splits",
    "fastweights.tasks.wikitext": "download",
    "fastweights.train.lm": ("generate_text", "load_lm_run", "evaluate_lm_run"),
    "fastweights.train": "evaluate_run",
    "fastweights.train.loop": "evaluate_run",
    "fastweights.rl": "evaluate_rl_run",
}


def _set_tripwires(monkeypatch):
    import importlib

    for module, attrs in TRIPWIRES.items():
        mod = importlib.import_module(module)
        for attr in (attrs,) if isinstance(attrs, str) else attrs:
            def trip(*a, _name=f"{module}.{attr}", **kw):
                raise WorkStarted(f"{_name} was called: the bad input was not refused before the work")
            monkeypatch.setattr(mod, attr, trip)


def _fill(text: str, names: dict) -> str:
    return text.format(**names) if text else text


def check_refused(result_code, stderr: str, needle: str | None, code: int, cwd: Path, before: dict,
                  root: Path, root_before: dict, expect_files: set):
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert result_code == code, f"exit code {result_code}, expected {code}; stderr:\n{stderr}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr, expected one:\n{stderr}"
    assert lines[0].startswith("fastweights: error: "), lines[0]
    if needle:
        assert needle in lines[0], f"the error does not name {needle!r}: {lines[0]}"
    left = {p for p in os.listdir(cwd)}
    assert left == expect_files, f"files written in the working directory: {sorted(left - expect_files)}"
    assert _tree(cwd) == before, "the case's own files were changed"
    assert _tree(root) == root_before, "the fixture runs were changed"


@pytest.fixture(scope="module")
def one_parser():
    """``main`` builds its parser once for the module (building it is most of an in-process call's time)."""
    import fastweights.cli as cli

    parser = cli.build_parser()
    mp = pytest.MonkeyPatch()
    mp.setattr(cli, "build_parser", lambda: parser)
    yield
    mp.undo()


@pytest.mark.parametrize("argv,needle,code,work,setup", CASES)
def test_bad_input_is_one_line_before_any_work(argv, needle, code, work, setup, fixtures, one_parser, monkeypatch,
                                               capsys):
    root, names, _ = fixtures
    cwd = Path(tempfile.mkdtemp(dir=root.parent, prefix="cwd"))
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("FASTWEIGHTS_CACHE", names["cache"])
    if setup is not None:
        setup(cwd)
    before, root_before, expect = _tree(cwd), _tree(root), set(os.listdir(cwd))
    if not work:
        _set_tripwires(monkeypatch)
    r = cli_in_process(capsys, *shlex.split(_fill(argv, names)))
    check_refused(r.returncode, r.stderr, _fill(needle, names), code, cwd, before, root, root_before, expect)


def test_case_count():
    assert len(CASES) >= 150


# ------------------------------------------------------------------------------------------ a missing extra

def test_atari_without_ale_py_names_the_extra(tmp_path, monkeypatch, capsys):
    """``train atari`` without ale-py: one line saying which extra to install."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ale_py", None)  # import ale_py raises ImportError
    r = cli_in_process(capsys, "train", "atari", "--actors", "0", "--frames", "100", "--out", tmp_path / "run")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "pip install 'fastweights[atari]'" in lines[0], lines[0]
    assert "ale-py" in lines[0]


def test_atari_without_ale_py_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ale_py", None)
    r = cli_in_process(capsys, "train", "atari", "--actors", "0", "--frames", "100")
    assert r.returncode == 2 and os.listdir(tmp_path) == [], os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------ real processes

def test_bad_input_in_real_processes(fixtures):
    root, names, procs = fixtures
    for p, cwd, argv, needle in procs:
        _, err = p.communicate(timeout=120)
        try:
            check_refused(p.returncode, err, needle, 2, cwd, {}, root, _tree(root), set())
        except AssertionError as e:
            raise AssertionError(f"fastweights {argv}: {e}") from None

"""SMOKE TEST of the analysis scripts under results/ (about 30 s on 2 cores): each one is run as a real
command (``sys.executable SCRIPT ...``) on the committed run records under ``results/<study>/records/``,
writing into a temporary directory, and must exit 0 and write non-empty output (files, or the table it
prints). It checks only that the scripts still run against the current ``fastweights`` APIs and record
layout, not their numbers.

The jobs run two at a time in the background (one thread each), started when the first test of this module
asks for them; each test waits for its own. Scripts that need long compute are only syntax- and
usage-checked (``NOT_RUN``, with the reason), and every script under ``results/*/scripts/`` must be either
run here or listed there. The WikiText-103 scripts need the data (``$FASTWEIGHTS_DATA/wikitext-103``,
default ``../shared/data`` beside the repository) and are skipped without it; the Atari scripts that step
the emulator or size the action space need ale-py (the ``dev`` extra) and are skipped without it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import cli_env

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"
ALG = RESULTS / "algorithmic"
ATARI = RESULTS / "atari"
WT = RESULTS / "wikitext103"
LIFE_RUNS = ATARI / "records" / "runs-life"
BREAKOUT = [LIFE_RUNS / "Breakout-lstm-shallow-b16u20-eps3e-3-orthogonal-life",
            LIFE_RUNS / "Breakout-rdn-shallow-b16u20-eps3e-3-orthogonal-life"]
MEMORY_RUNS = [ATARI / "records" / "memory" / core for core in ("rdn", "lstm", "ff")]
WT_DATA = Path(os.environ.get("FASTWEIGHTS_DATA") or REPO.parent / "shared" / "data") / "wikitext-103"
HAS_ALE = importlib.util.find_spec("ale_py") is not None
TIMEOUT = 300

# Scripts not run here, with the reason; they get `bash -n` (and a usage check where they take arguments).
NOT_RUN = {
    "algorithmic/scripts/sweep.sh": "trains every model for 10 CPU-minutes per setting",
    "atari/scripts/learn.sh": "trains IMPALA on Atari games for 3M frames each",
    "wikitext103/scripts/run_all.sh": "trains every model on WikiText-103 for 5 CPU-minutes",
    "wikitext103/scripts/run_carry.sh": "trains the carried-state Delta RNN on WikiText-103 for 5 CPU-minutes",
    "algorithmic/scripts/converged.sh": "trains each model to its plateau or 10,000 steps",
    "algorithmic/scripts/converged_cost.py": "times training steps of every model at three sizes (minutes)",
    "speed/scripts/learning.sh": "trains five models x two precisions x two seeds for 500 ListOps steps",
    "speed/scripts/measure.sh": "times training steps and ops side by side with an older tree (about 20 minutes)",
    "speed/scripts/profile_step.py": "profiles training steps of five models (minutes)",
}


@dataclass
class Job:
    """Commands run one after the other (``{tmp}`` in an argument is this job's temporary directory); the job
    passes when every command exits 0, their stdout contains every string of ``stdout``, and every file of
    ``outputs`` (relative to the temporary directory) exists and is not empty."""
    commands: list[list[str]]
    outputs: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    needs: str = ""   # "ale" or "wikitext": skipped where that is missing
    env: dict[str, str] = field(default_factory=dict)
    cpu: float = 4.0  # about the CPU seconds it takes: the costliest start first


def py(script: str, *args) -> list[str]:
    return [sys.executable, str(RESULTS / script), *map(str, args)]


def fw(*args) -> list[str]:
    return [sys.executable, "-m", "fastweights.cli", *map(str, args)]


JOBS: dict[str, Job] = {
    # algorithmic
    "algorithmic/at_step.py": Job([py("algorithmic/scripts/at_step.py", ALG / "records" / "runs", "v3",
                                      "--steps", "100,200")], stdout=["| lstm |"], cpu=0.1),
    "algorithmic/baselines.py": Job([
        fw("data", "code-exec", "--vars", "3", "--sizes", "64,8,32", "--length", "20", "--out", "{tmp}/data"),
        py("algorithmic/scripts/baselines.py", "{tmp}/data/test.txt")], stdout=["| exact | 100.0% |"], cpu=0.5),
    "algorithmic/step_cost.py": Job([
        fw("data", "code-exec", "--vars", "3", "--sizes", "32,8,8", "--length", "10", "--out", "{tmp}/data"),
        py("algorithmic/scripts/step_cost.py", "{tmp}/data", "--rounds", "1", "--models", "lstm",
           "--batch-size", "8", "--json", "{tmp}/step_cost.json")],
        outputs=["step_cost.json"], stdout=["| lstm |"], cpu=6),
    "algorithmic/converged_report.py": Job([
        fw("data", "listops", "--depth", "4", "--sizes", "64,16,16", "--out", "{tmp}/data"),
        fw("train", "listops", "--model", "lstm", "--data", "{tmp}/data", "--steps", "4", "--eval-interval", "2",
           "--d-model", "16", "--layers", "1", "--heads", "2", "--batch-size", "8", "--threads", "1",
           "--budget-clock", "cpu", "--out", "{tmp}/runs/d15-lstm-s0"),
        fw("compare", "{tmp}/runs/d15-lstm-s0", "--test"),
        py("algorithmic/scripts/converged_report.py", "{tmp}/runs", "--out", "{tmp}/out")],
        outputs=["out/converged.md", "out/converged_d15.png"], stdout=["| d15 | lstm | 0 | step cap | 4 |"], cpu=4),
    "algorithmic/report.sh": Job([
        ["bash", str(ALG / "scripts" / "report.sh"), "--out", "{tmp}", ALG / "records" / "runs", "v3"]],
        outputs=["records/v3.md", "records/v3.json", "figures/v3.png", "records/runs/v3-lstm/metrics.jsonl"],
        stdout=["| rdn |"], env={"NO_TEST": "1", "FW": f"{sys.executable} -m fastweights.cli"}),
    # atari
    "atari/plot.py memory": Job([py("atari/scripts/plot.py", "memory", "{tmp}/figures/memory.png", *MEMORY_RUNS)],
                                outputs=["figures/memory.png"]),
    "atari/plot.py return": Job([py("atari/scripts/plot.py", "return", "{tmp}/figures/breakout.png", *BREAKOUT)],
                                outputs=["figures/breakout.png"], needs="ale"),
    "atari/table.py": Job([py("atari/scripts/table.py", *BREAKOUT)], stdout=["| Breakout-rdn-"], needs="ale"),
    "atari/eval_table.py": Job([py("atari/scripts/eval_table.py", BREAKOUT[0], "--random-episodes", "2")],
                               stdout=["| Breakout-lstm-"], needs="ale"),
    "atari/random_play.py": Job([py("atari/scripts/random_play.py", MEMORY_RUNS[0], "--episodes", "2")],
                                stdout=["random play"]),
    # the committed records keep no checkpoints: these two read a tiny memory-task run trained here
    "atari/rms_vs_eps.py, features.py": Job([
        fw("train", "memory", "--core", "lstm", "--features", "16", "--core-dim", "16", "--frames", "80",
           "--batch-size", "2", "--unroll", "20", "--actors", "0", "--log-interval", "1", "--save-interval", "1",
           "--out", "{tmp}/mem"),
        py("atari/scripts/rms_vs_eps.py", "{tmp}/mem"),
        py("atari/scripts/features.py", "{tmp}/mem")], stdout=["have sqrt(v) < eps", "dead units"], cpu=14),
    # formal languages: the study's plan (no training) and its tables from the committed records
    "formal/study.py": Job([py("formal/scripts/study.py", "{tmp}/runs", "--dry-run")],
                           stdout=["runs to do"], cpu=0.1),
    "formal/report.py": Job([py("formal/scripts/report.py", "--out", "{tmp}")],
                            outputs=["tables.md", "records/study.json", "figures/accuracy.png"],
                            stdout=["| rdn |"], cpu=2),
    # speed: the learning floor (fp32 against auto) from the committed records
    "speed/learning_check.py": Job([py("speed/scripts/learning_check.py", RESULTS / "speed" / "records" / "runs")],
                                   stdout=["| rdn |", "| yes |"], cpu=0.1),
    # wikitext103
    "wikitext103/collect.py": Job([
        py("wikitext103/scripts/collect.py", "--out", "{tmp}", "--data", WT_DATA, "--cache-dir", "{tmp}/cache")],
        outputs=["records/table.md", "records/table.json", "figures/valid_curves.png"], stdout=["| rdn |"],
        needs="wikitext"),
    "wikitext103/step_cost.py": Job([
        py("wikitext103/scripts/step_cost.py", "--steps", "1", "--models", "lstm", "--data", WT_DATA,
           "--cache-dir", "{tmp}/cache", "--json", "{tmp}/step_cost.json")],
        outputs=["step_cost.json"], stdout=["CPU-s/step"], needs="wikitext", cpu=7),
}


def missing(job: Job) -> str | None:
    if job.needs == "ale" and not HAS_ALE:
        return "needs ale-py (pip install -e '.[dev]')"
    if job.needs == "wikitext" and not (WT_DATA / "wiki.valid.tokens").exists():
        return f"needs the WikiText-103 data in {WT_DATA} (set FASTWEIGHTS_DATA)"
    return None


def run_job(job: Job, tmp: Path) -> tuple[list[subprocess.CompletedProcess], Path]:
    """Runs the job's commands in ``tmp`` until one fails; returns the processes run."""
    tmp.mkdir(parents=True)
    env = cli_env(MPLBACKEND="Agg", **job.env)
    procs = []
    for cmd in job.commands:
        procs.append(subprocess.run([str(a).replace("{tmp}", str(tmp)) for a in cmd], capture_output=True,
                                    text=True, env=env, cwd=tmp, timeout=TIMEOUT))
        if procs[-1].returncode != 0:
            break
    return procs, tmp


class Runner:
    """Starts the selected jobs two at a time and hands each test its own result."""

    def __init__(self, names: list[str], root: Path):
        self.pool = ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1))
        self.root = root
        self.futures: dict[str, Future] = {}
        self.lock = threading.Lock()
        for name in sorted(names, key=lambda n: -JOBS[n].cpu):
            self.submit(name)

    def submit(self, name: str) -> Future:
        with self.lock:
            if name not in self.futures:
                tmp = self.root / f"job{len(self.futures)}"
                self.futures[name] = self.pool.submit(run_job, JOBS[name], tmp)
            return self.futures[name]


@pytest.fixture(scope="module")
def runner(request, tmp_path_factory):
    selected = [item.callspec.params["name"] for item in request.session.items
                if item.module is request.module and getattr(item, "callspec", None)
                and "name" in item.callspec.params]
    r = Runner([n for n in selected if missing(JOBS[n]) is None], tmp_path_factory.mktemp("results_scripts"))
    yield r
    r.pool.shutdown(wait=True)


@pytest.mark.parametrize("name", list(JOBS))
def test_script_runs(runner, name):
    job = JOBS[name]
    if (why := missing(job)) is not None:
        pytest.skip(why)
    procs, tmp = runner.submit(name).result()
    last = procs[-1]
    detail = f"{last.args}\nrc {last.returncode}\nstdout:\n{last.stdout[-3000:]}\nstderr:\n{last.stderr[-3000:]}"
    assert last.returncode == 0, detail
    stdout = "".join(p.stdout for p in procs)
    for needle in job.stdout:
        assert needle in stdout, f"{needle!r} not printed\n{detail}"
    for out in job.outputs:
        path = tmp / out
        assert path.is_file() and path.stat().st_size > 0, f"{path} not written\n{detail}"


def test_every_script_is_covered():
    """Each script under results/*/scripts/ is run by a job above or listed in NOT_RUN."""
    run = {a for job in JOBS.values() for cmd in job.commands for a in map(str, cmd) if "/scripts/" in a}
    scripts = sorted(RESULTS.glob("*/scripts/*"))
    assert scripts
    uncovered = [str(s.relative_to(RESULTS)) for s in scripts
                 if s.suffix in (".py", ".sh") and str(s) not in run and str(s.relative_to(RESULTS)) not in NOT_RUN]
    assert not uncovered, f"add a job or a NOT_RUN entry for: {uncovered}"
    stale = [s for s in NOT_RUN if not (RESULTS / s).exists()]
    assert not stale, f"NOT_RUN lists missing scripts: {stale}"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", sorted(str(p.relative_to(RESULTS)) for p in RESULTS.glob("*/scripts/*.sh")))
def test_shell_script_syntax(script):
    proc = subprocess.run(["bash", "-n", str(RESULTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("script", ["algorithmic/scripts/sweep.sh", "atari/scripts/learn.sh",
                                    "algorithmic/scripts/converged.sh", "speed/scripts/learning.sh"])
def test_shell_script_usage(script):
    """Without arguments the training scripts stop at their usage line, before running anything."""
    proc = subprocess.run(["bash", str(RESULTS / script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "usage:" in proc.stderr, proc.stderr

"""The formal-language study behind results/formal.md: 8 models x 8 languages x 3 seeds, with a learning-rate grid.

    python results/formal/scripts/study.py RUNS_DIR [--worker I/N] [--phase 1|2|all] [--dry-run]

Phase 1 trains seed 0 of every (model, language) at each learning rate of the grid (LRS). Phase 2 trains
seeds 1 and 2 at the learning rate whose seed-0 run scored best (the runs' own checkpoint score: the mean string
accuracy of the valid and the long split, then the lower mean loss; ties go to the larger rate). Each run is
``fastweights train formal`` on the language's data (generated once into RUNS_DIR/data), one torch thread, at
most STEPS steps (validation every EVAL steps), stopping early once both splits are at 100%. Finished runs are
skipped (also when only their committed records are here, e.g. on another machine) and interrupted ones
resumed, so the script can be re-run until everything is done; ``--worker I/N``
takes the runs whose name hashes to I (start N copies side by side, one per core). Each finished run's records (config,
metrics, summary; not its checkpoints) are copied to results/formal/records/runs/NAME.

Environment: FW (the fastweights command, default ``fastweights``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

MODELS = ["lstm", "transformer", "lt", "deltanet", "delta-rnn", "rdn", "srwm", "gated-deltanet"]
LANGUAGES = ["parity", "aa-star", "abab-star", "counter-2", "counter-3", "dyck-1", "shuffle-2", "reset-dyck"]
LRS = ["1e-3", "3e-4"]
SEEDS = [0, 1, 2]
STEPS = 3000
EVAL = 200
RECORDS = Path(__file__).resolve().parents[1] / "records" / "runs"
KEEP = ("config.json", "metrics.jsonl", "summary.json", "provenance.json")


def name(model: str, language: str, lr: str, seed: int) -> str:
    return f"{language}-{model}-lr{lr}-s{seed}"


def finished(run: Path) -> dict | None:
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def score(summary: dict) -> tuple:
    m = summary.get("best_valid") or {}
    return ((m.get("acc", 0) + m.get("long_acc", 0)) / 2, -(m.get("loss", 9e9) + m.get("long_loss", 9e9)) / 2)


def chosen_lr(runs: Path, model: str, language: str) -> str | None:
    """The grid's best learning rate for (model, language), or None while a seed-0 run is unfinished."""
    results = []
    for lr in LRS:
        s = finished(runs / name(model, language, lr, 0)) or finished(RECORDS / name(model, language, lr, 0))
        if s is None:
            return None
        results.append((score(s), float(lr), lr))
    return max(results)[2]


def plan(runs: Path, phase: str, languages=LANGUAGES) -> list[tuple]:
    """(model, language, lr, seed) of every run of the phase for ``languages`` (phase 2: of the pairs whose grid
    is finished)."""
    todo = []
    if phase in ("1", "all"):
        todo += [(m, lang, lr, 0) for lang in languages for m in MODELS for lr in LRS]
    if phase in ("2", "all"):
        for lang in languages:
            for m in MODELS:
                lr = chosen_lr(runs, m, lang)
                if lr is not None:
                    todo += [(m, lang, lr, s) for s in SEEDS[1:]]
    return todo


def mine(run: tuple, i: int, n: int) -> bool:
    """Worker ``i`` of ``n`` takes the runs whose name hashes to ``i``: a stable split, whatever the plan's order."""
    return int(hashlib.sha1(name(*run).encode()).hexdigest(), 16) % n == i


def command(fw: str, runs: Path, model: str, language: str, lr: str, seed: int) -> list[str]:
    out = runs / name(model, language, lr, seed)
    cmd = [fw, "train", "formal", "--language", language, "--model", model, "--lr", lr, "--seed", str(seed),
           "--data", str(runs / "data" / language), "--steps", str(STEPS), "--eval-interval", str(EVAL),
           "--threads", "1", "--out", str(out)]
    if (out / "config.json").exists():
        cmd.append("--resume")
    return cmd


def keep_records(run: Path) -> None:
    dest = RECORDS / run.name
    dest.mkdir(parents=True, exist_ok=True)
    for f in KEEP:
        if (run / f).exists():
            shutil.copy2(run / f, dest / f)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--worker", default="0/1", help="I/N: take the runs whose name hashes to I modulo N (default 0/1)")
    p.add_argument("--phase", choices=("1", "2", "all"), default="all")
    p.add_argument("--dry-run", action="store_true", help="print the commands of the runs still to do")
    args = p.parse_args(argv)
    try:
        i, n = (int(x) for x in args.worker.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        p.error(f"--worker: expected I/N with 0 <= I < N, got {args.worker!r}")
    fw = os.environ.get("FW", "fastweights")
    for lang in LANGUAGES:
        data = args.runs / "data" / lang
        if not (data / "meta.json").exists() and not args.dry_run:
            subprocess.run([fw, "data", "formal", "--language", lang, "--out", str(data)], check=True)
    # Language by language (parity first): its grid, then its further seeds, so that finished languages have all
    # their seeds early; then one more pass over phase 2 for the pairs whose grid the other workers finished later.
    if args.phase == "all":
        passes = [(ph, [lang]) for lang in LANGUAGES for ph in ("1", "2")] + [("2", LANGUAGES)]
    else:
        passes = [(args.phase, LANGUAGES)]
    todo, seen = 0, set()
    for phase, languages in passes:
        for run in plan(args.runs, phase, languages):
            if not mine(run, i, n) or run in seen:
                continue
            seen.add(run)
            out = args.runs / name(*run)
            if finished(out):
                keep_records(out)
                continue
            if finished(RECORDS / out.name):  # finished on another machine: its records are committed
                continue
            cmd = command(fw, args.runs, *run)
            todo += 1
            if args.dry_run:
                print(" ".join(cmd))
                continue
            print(f"[study] {' '.join(cmd)}", flush=True)
            rc = subprocess.run(cmd).returncode
            if rc in (130, 143):  # interrupted: stop here, resume on the next start
                return rc
            if finished(out):
                keep_records(out)
            else:
                print(f"[study] {out.name} ended with code {rc}, not completed", file=sys.stderr, flush=True)
    if args.dry_run:
        print(f"{todo} runs to do (phase 2 lists only the (model, language) pairs whose grid is finished)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

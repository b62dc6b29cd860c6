"""The whole RL stack on the memory environment: actor processes, the bounded queue, a dead actor,
the command line (train, resume, eval, errors), NaN stops, and the end-to-end check that memory cores
learn cue recall while the memoryless core stays at chance."""

import json
import subprocess
import sys
import time

import pytest

from fastweights.rl import RLConfig, RLError, evaluate_rl_run, train

from .helpers import cli_env, cli_in_process


def _cfg(tmp_path, name, **kw):
    base = dict(env="memory", cues=2, delay=3, features=32, core_dim=32, core_ff=64, batch_size=16, unroll=20,
                lr=2e-3, actors=0, threads=1, log_interval=20, save_interval=50, out=str(tmp_path / name))
    base.update(kw)
    return RLConfig(**base)


# ---- end to end: memory is needed and is learned ---------------------------------------------------------

@pytest.mark.parametrize("core,frames", [("lstm", 40_000), ("rdn", 40_000)])
def test_memory_cores_solve_cue_recall(tmp_path, core, frames):
    cfg = _cfg(tmp_path, core, core=core, frames=frames)
    summary = train(cfg, progress=False)
    assert summary["status"] == "completed"
    result = evaluate_rl_run(cfg.out, episodes=200)
    assert result["success"] >= 0.95, result["success"]


def test_memoryless_core_stays_at_chance(tmp_path):
    cfg = _cfg(tmp_path, "ff", core="ff", frames=40_000)
    train(cfg, progress=False)
    result = evaluate_rl_run(cfg.out, episodes=400)
    # the query looks the same whatever the cue: a greedy memoryless policy wins half the time
    assert 0.35 <= result["success"] <= 0.65, result["success"]


# ---- evaluation: the actors' loop, results pinned ---------------------------------------------------

# Returns (1 = cue recalled) of a freshly initialised agent, in the order the games ended: 20 episodes on
# 6 environments (shares 4, 4, 3, 3, 3, 3, so rows sit idle at the end), recorded with the evaluation loop
# that preceded rl.actors.EnvLoop (commit f5cf0a7).
PINNED_RETURNS = {("rdn", "greedy"): "00000110011000010011", ("rdn", "sampled"): "00001100010011000010",
                  ("lstm", "greedy"): "00000110011000010011", ("lstm", "sampled"): "00001100010011100000"}


@pytest.mark.parametrize("core", ["rdn", "lstm"])
def test_evaluation_of_a_fresh_run_gives_the_pinned_returns(tmp_path, core):
    import torch

    from fastweights.rl.actors import build_agent, env_spec
    from fastweights.train.checkpoint import save_checkpoint

    run = tmp_path / core
    cfg = RLConfig(env="memory", cues=3, delay=2, core=core, features=16, core_dim=16, core_ff=32, out=str(run))
    torch.manual_seed(0)
    agent = build_agent(cfg, *env_spec(cfg))
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    save_checkpoint(run / "checkpoints", agent, {"frames": 0}, step=0)
    for policy in ("greedy", "sampled"):
        res = evaluate_rl_run(run, episodes=20, envs=6, greedy=policy == "greedy")
        assert "".join(str(int(r)) for r in res["returns"]) == PINNED_RETURNS[core, policy], policy
        assert res["episode_length_mean"] == 4.0 and res["success"] == res["return_mean"]


# ---- actor processes ---------------------------------------------------------------------------------

def test_actor_processes_feed_the_learner(tmp_path):
    cfg = _cfg(tmp_path, "procs", core="rdn", frames=16 * 20 * 6, actors=2, log_interval=2)
    t0 = time.time()
    summary = train(cfg, progress=False)
    assert summary["status"] == "completed" and summary["step"] == 6
    records = [json.loads(line) for line in open(tmp_path / "procs" / "metrics.jsonl")]
    assert records[-1]["frames"] == 16 * 20 * 6 and records[-1]["episodes"] > 0
    assert (tmp_path / "procs" / "curves.png").exists()
    assert time.time() - t0 < 120


def test_actor_pool_delivers_what_an_in_process_worker_collects():
    """The observations travel through shared-memory slots (one slot here, so it is reused for every
    rollout), the rest through the queue: the batches equal the rollouts of the same worker run here."""
    import torch

    from fastweights.rl.actors import ActorPool, RolloutWorker, build_agent, env_spec, make_env

    cfg = RLConfig(env="memory", cues=2, delay=1, core="rdn", features=8, core_dim=8, core_ff=16, batch_size=4,
                   unroll=5, actors=1, queue_size=1, out="unused")
    torch.manual_seed(0)
    agent = build_agent(cfg, *env_spec(cfg))
    agent.share_memory()
    pool = ActorPool(cfg, agent)
    try:
        batches = [pool.next_batch(timeout_s=60) for _ in range(3)]
    finally:
        pool.close()
    old = torch.get_num_threads()
    torch.set_num_threads(cfg.actor_threads)
    try:
        worker = RolloutWorker([make_env(cfg) for _ in range(4)], agent, cfg.unroll, cfg.reward_clip,
                               seed=cfg.seed * 10007 + 101)  # actor 0's seed
        expected = [worker.collect() for _ in range(3)]
    finally:
        torch.set_num_threads(old)
    for got, want in zip(batches, expected):
        for key in ("obs", "reward", "first", "action"):
            assert torch.equal(got[key], want[key]), key
        torch.testing.assert_close(got["logits"], want["logits"])
        for a, b in zip(got["state"], want["state"]):
            torch.testing.assert_close(a, b)
        assert got["episodes"] == want["episodes"] and got["env_frames"] == want["env_frames"]
    assert torch.equal(batches[1]["obs"][0], batches[0]["obs"][-1])  # the overlapping frame


@pytest.mark.parametrize("fault,expect", [("actor-crash:2", "exited with code 1; its last error: RuntimeError: "
                                                             "injected fault"),
                                          ("actor-kill:1", "killed by signal 9")])
def test_dead_actor_raises_a_clear_error(tmp_path, monkeypatch, fault, expect):
    monkeypatch.setenv("FASTWEIGHTS_FAULT", fault)
    cfg = _cfg(tmp_path, "dead", core="ff", frames=10 ** 7, actors=2, queue_size=1)
    t0 = time.time()
    with pytest.raises(RLError) as e:
        train(cfg, progress=False)
    assert "actor 0" in str(e.value) and expect in str(e.value)
    assert time.time() - t0 < 60  # never hangs


# ---- command line ------------------------------------------------------------------------------------

def test_cli_train_resume_eval(tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--core", "ff", "--delay", "2", "--features", "16", "--core-dim", "16", "--actors", "0",
              "--threads", "1", "--out", str(out), "--log-interval", "5", "--save-interval", "5"]
    r = cli_in_process(capsys, "train", "memory", *common, "--frames", "3200")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "summary.json").read_text())["step"] == 10
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["kind"] == "rl" and cfg["core"] == "ff"
    r = cli_in_process(capsys, "train", "memory", "--out", str(out), "--resume", "--frames", "6.4e3")
    assert r.returncode == 0, r.stderr
    assert "resuming at step 10" in r.stderr
    assert json.loads((out / "summary.json").read_text())["step"] == 20
    r = cli_in_process(capsys, "eval", str(out), "--episodes", "12", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["episodes"] == 12 and res["step"] == 20 and "return_std" in res and 0 <= res["success"] <= 1
    assert res["policy"] == "greedy"
    r = cli_in_process(capsys, "eval", str(out), "--episodes", "12", "--sample", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["policy"] == "sampled" and json.loads(r.stdout)["episodes"] == 12
    r = cli_in_process(capsys, "eval", str(out), "--episodes", "5")
    assert r.returncode == 0 and "return" in r.stdout and "+-" in r.stdout and "greedy" in r.stdout
    r = cli_in_process(capsys, "eval", str(tmp_path), "--sample")
    assert r.returncode == 2 and "--sample: applies to RL runs only" in r.stderr
    r = cli_in_process(capsys, "train", "memory", "--out", str(out), "--resume", "--core", "rdn")
    assert r.returncode == 2 and r.stderr.strip().startswith("fastweights: error: --core: cannot change core")


@pytest.mark.parametrize("args,flag", [(["--lr", "fast"], "--lr"), (["--core", "gru"], "--core"),
                                       (["--delay", "-3"], "--delay"), (["--frames", "2.5"], "--frames"),
                                       (["--batch-size", "16", "--actors", "3"], "--actors")])
def test_cli_bad_flags_give_one_line(tmp_path, capsys, args, flag):
    r = cli_in_process(capsys, "train", "memory", *args, "--out", str(tmp_path / "x"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastweights: error: {flag}"), r.stderr


def test_nan_loss_stops_keeping_the_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FASTWEIGHTS_FAULT", "nan-at-step:3")
    out = tmp_path / "nan"
    r = cli_in_process(capsys, "train", "memory", "--core", "ff", "--features", "8", "--actors", "0",
                       "--out", str(out), "--frames", "1e5", "--save-interval", "2")
    assert r.returncode == 1
    assert "loss is nan at step 3" in r.stderr and "step 2" in r.stderr
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 2


def test_time_budget_stops_saves_and_resumes(tmp_path):
    """The learner runs in the training system's step loop: a spent time budget stops the run after a step,
    with a checkpoint of that step, and a resume with a larger budget carries the counters on."""
    import dataclasses

    cfg = _cfg(tmp_path, "budget", core="ff", features=8, frames=16 * 20 * 4, time_budget_minutes=1e-4,
               save_interval=100)
    summary = train(cfg, progress=False)
    assert summary["status"] == "completed" and summary["stopped"] == "time budget"
    assert summary["step"] == 1 and summary["frames"] == 16 * 20
    assert json.loads((tmp_path / "budget" / "checkpoints" / "last.json").read_text())["step"] == 1
    summary = train(dataclasses.replace(cfg, time_budget_minutes=None), resume=True, progress=False)
    assert summary["stopped"] is None and summary["step"] == 4 and summary["frames"] == 16 * 20 * 4
    records = [json.loads(line) for line in open(tmp_path / "budget" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 4] and records[-1]["episodes_total"] == summary["episodes"]


def test_sigterm_saves_and_stops(tmp_path):
    import signal

    out = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "fastweights.cli", "train", "memory", "--core", "ff",
                             "--features", "8", "--actors", "0", "--out", str(out), "--frames", "1e8",
                             "--save-interval", "100000", "--log-interval", "1"],
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    deadline = time.time() + 60
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # SIGTERM: saved, then the exit code says it was stopped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped"] == "SIGTERM"
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == summary["step"]

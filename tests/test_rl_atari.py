"""Atari preprocessing and a tiny IMPALA run on Pong (skipped without ale-py)."""

import json

import numpy as np
import pytest

from fastweights.tasks.atari import _area_weights, have_ale, resize_area

needs_ale = pytest.mark.skipif(not have_ale(), reason="ale-py is not installed (pip install -e '.[atari]')")


def test_area_resize():
    flat = np.full((210, 160), 77, dtype=np.uint8)
    assert (resize_area(flat) == 77).all()
    img = np.random.default_rng(0).integers(0, 256, (168, 168)).astype(np.uint8)
    expected = img.reshape(84, 2, 84, 2).mean((1, 3))
    assert np.abs(resize_area(img).astype(float) - expected).max() <= 0.5 + 1e-6
    idx, w = _area_weights(210, 84)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)


@needs_ale
def test_atari_env_preprocessing():
    from fastweights.tasks.atari import AtariEnv

    env = AtariEnv("Pong", noop_max=30)
    obs, info = env.reset(seed=3)
    assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
    assert 0 <= info["raw_frames"] <= 30
    assert (obs[0] == obs[-1]).all()  # a fresh stack repeats the first frame
    rng = np.random.default_rng(0)
    frames, total = 0, 0.0
    for _ in range(300):
        obs, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
        frames += info["raw_frames"]
        total += r
        assert r == int(r) and not trunc
    assert frames == 1200  # frame skip 4
    assert not (obs[0] == obs[-1]).all()
    # the observation is the max of the last two raw frames of the step, resized
    ref = AtariEnv("Pong", noop_max=0)
    ref.reset(seed=0)
    raw = ref._env.unwrapped
    o, *_ = ref.step(0)
    state = raw.clone_state()
    ref2 = AtariEnv("Pong", noop_max=0)
    ref2.reset(seed=0)
    ref2._env.unwrapped.restore_state(state)
    frames_raw = [ref2._env.step(3)[0] for _ in range(4)]
    ref._env.unwrapped.restore_state(state)
    o, *_ = ref.step(3)
    np.testing.assert_array_equal(o[-1], resize_area(np.maximum(frames_raw[2], frames_raw[3])))
    with pytest.raises(ValueError, match="unknown Atari game"):
        AtariEnv("NoSuchGame")


@needs_ale
@pytest.mark.parametrize("episodic_life,fire_reset", [(True, True), (False, True), (True, False)])
def test_episodic_life_and_fire_reset_in_breakout(episodic_life, fire_reset):
    """An agent that never presses FIRE: with fire_reset the ball is launched after the reset and after each
    lost life, so all 5 lives go (4 of them flagged as lost with episodic_life, the 5th ends the game); without
    it the ball never comes and the game runs to the frame cap."""
    from fastweights.tasks.atari import AtariEnv

    env = AtariEnv("Breakout", noop_max=0, max_episode_frames=4000, episodic_life=episodic_life,
                   fire_reset=fire_reset)
    obs, info = env.reset(seed=1)
    frames, lost = info["raw_frames"], 0
    assert frames == (4 if fire_reset else 0)
    while True:
        obs, r, term, trunc, info = env.step(0)
        frames += info["raw_frames"]
        lost += bool(info.get("life_lost"))
        if term or trunc:
            break
    if fire_reset:
        assert term and not trunc and env.ale.lives() == 0 and frames < 1000
        assert lost == (4 if episodic_life else 0)
    else:
        assert trunc and lost == 0 and frames == 4000
    # games without FIRE ignore fire_reset
    assert not AtariEnv("Freeway", fire_reset=True).fire_reset  # actions NOOP, UP, DOWN


@needs_ale
def test_train_and_eval_atari_tiny(tmp_path, capsys):
    from fastweights.cli import main

    out = tmp_path / "pong"
    code = main(["train", "atari", "--game", "Pong", "--core", "rdn", "--encoder", "shallow", "--frames", "80",
                 "--batch-size", "2", "--unroll", "5", "--actors", "1", "--threads", "1", "--out", str(out),
                 "--log-interval", "1"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 2 and summary["frames"] >= 80
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["frames_per_s"] > 0 and (out / "curves.png").exists()
    # full games are long: cap them for the test
    cfg = json.loads((out / "config.json").read_text())
    cfg["max_episode_frames"] = 600
    (out / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["episodes"] == 2 and res["env"] == "Pong" and res["episode_length_mean"] <= 150
    assert main(["train", "atari", "--encoder", "mlp", "--out", str(tmp_path / "x")]) == 2
    assert "--encoder" in capsys.readouterr().err
    assert main(["train", "atari", "--fire-reset", "maybe", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith("--fire-reset: expected on or off, got 'maybe'")

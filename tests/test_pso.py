"""Particle swarm: it finds the optimum of a simple function, is seeded, restarts and stops as specified."""
from __future__ import annotations

import numpy as np
import pytest

from moco.search import ParticleSwarm, SwarmSettings


def test_swarm_climbs_a_concave_function_and_is_seeded():
    target = np.array([0.3, -0.5, 0.8])

    def run(seed):
        sw = ParticleSwarm.random(8, 3, SwarmSettings(seed=seed, patience=50, restart_patience=10))
        for _ in range(60):
            sw.update([-float(np.sum((p - target) ** 2)) for p in sw.positions])
        return sw

    a, b = run(1), run(1)
    assert np.allclose(a.gbest, b.gbest) and a.history == b.history
    assert not np.allclose(run(2).history, a.history)
    runs = [run(seed) for seed in range(10)]
    assert np.median([r.gbest_score for r in runs]) > -0.02  # most runs end near the optimum 0
    for r in runs:
        assert all(y >= x for x, y in zip(r.history, r.history[1:]))  # the global best never gets worse
        assert r.history[-1] > r.history[0] or r.history[0] > -0.01


def test_update_rule_with_deterministic_weights():
    s = SwarmSettings(weight_randomness=False, repel_term=False, step_length=1.0, starting_velocity="zero",
                      restart_patience=99, patience=99)
    sw = ParticleSwarm(np.array([[0.0], [1.0]]), s)
    sw.update([0.0, 1.0])  # particle 1 is the global best
    # w, c, s normalised: 0.2/0.9, 0.3/0.9, 0.4/0.9; particle 0: v = 0.4/0.9 * (1 - 0) ; x = 0 + v
    assert sw.positions[0, 0] == pytest.approx(0.4 / 0.9)
    assert sw.positions[1, 0] == pytest.approx(1.0)  # at its own and the global best: it does not move
    assert sw.step == pytest.approx(0.95)


def test_restart_and_termination():
    sw = ParticleSwarm(np.array([[0.0], [1.0], [2.0]]), SwarmSettings(restart_patience=2, patience=3, seed=0))
    scores = [[1, 2, 3], [0, 0, 0], [0, 0, 0]]
    for sc in scores:
        sw.update(sc)
    assert {p for _, p in sw.restarts} == {0, 1, 2}  # no particle improved twice in a row
    assert not sw.update([0, 0, 0]) and sw.stalled  # 3 updates without a better global best
    assert sw.gbest_score == 3
    with pytest.raises(ValueError):
        sw.update([1, 2])

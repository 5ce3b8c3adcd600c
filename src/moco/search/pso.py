"""Particle swarm optimisation over real vectors (maximising a score), as used by Model Swarms and
Heterogeneous Swarms (Feng et al.): inertia, cognitive (personal best), social (global best) and repel
(global worst) terms with random weights normalised to sum to 1, a decaying step length, per-particle
restarts and early termination. Seeded: the same seed gives the same trajectory.

Weight-space swarms use the same update on flattened parameter tensors (`update` accepts any array shape), or
on coefficient vectors over the experts: with velocities started as differences of experts (or zero) and
restarts at rest, every position stays an affine combination of the experts, so the swarm in coefficient
space is the weight-space swarm exactly (`methods/weight/model_swarms.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SwarmSettings:
    inertia: float = 0.2
    cognitive: float = 0.3
    social: float = 0.4
    repel: float = 0.05
    repel_term: bool = True
    weight_randomness: bool = True
    step_length: float = 0.5
    step_length_factor: float = 0.95
    minimum_step_length: float = 0.1
    patience: int = 5  # stop when the global best has not improved for this many updates
    restart_patience: int = 3  # a particle that has not improved for this many updates restarts
    starting_velocity: str = "random"  # random | zero
    restart_velocity: str = "random"  # random | zero (Model Swarms: a restarted particle restarts at rest)
    restart_moves: bool = False  # Model Swarms (the authors' code): a restarted particle still takes this step
    seed: int = 0


@dataclass
class ParticleSwarm:
    """`positions` is (n_particles, ...). Call `update(scores)` after evaluating every particle."""

    positions: np.ndarray
    settings: SwarmSettings = field(default_factory=SwarmSettings)

    def __post_init__(self) -> None:
        s = self.settings
        self.rng = np.random.default_rng(s.seed)
        self.positions = np.array(self.positions, dtype=np.float64)
        n = len(self.positions)
        if n < 2:
            raise ValueError("a swarm needs at least 2 particles")
        self.velocities = (np.zeros_like(self.positions) if s.starting_velocity == "zero"
                           else self.rng.uniform(-1, 1, self.positions.shape))
        self.pbest = self.positions.copy()
        self.pbest_scores = np.full(n, -np.inf)
        self.gbest = self.positions[self.rng.integers(n)].copy()
        self.gworst = self.positions[self.rng.integers(n)].copy()
        self.gbest_score = -np.inf
        self.gworst_score = np.inf
        self.step = s.step_length
        self.history: list[float] = []  # global best after each update
        self.stale = np.zeros(n, dtype=int)  # updates since each particle last improved
        self.restarts: list[tuple[int, int]] = []  # (iteration, particle)
        self.iteration = 0

    @classmethod
    def random(cls, n_particles: int, dim: int, settings: SwarmSettings | None = None) -> "ParticleSwarm":
        s = settings or SwarmSettings()
        rng = np.random.default_rng(s.seed + 1)
        return cls(rng.uniform(-1, 1, (n_particles, dim)), s)

    @property
    def stalled(self) -> bool:
        """True when the global best has not improved for `patience` updates: stop searching."""
        p = self.settings.patience
        return len(self.history) > p and self.history[-1] <= self.history[-1 - p]

    def update(self, scores: list[float] | np.ndarray) -> bool:
        """Record the scores of the current positions and move the swarm. Returns False when stalled."""
        s = self.settings
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(self.positions),):
            raise ValueError(f"expected {len(self.positions)} scores, got shape {scores.shape}")
        improved = scores > self.pbest_scores
        self.pbest[improved] = self.positions[improved]
        self.pbest_scores[improved] = scores[improved]
        self.stale = np.where(improved, 0, self.stale + 1)
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] > self.gbest_score:
            self.gbest, self.gbest_score = self.positions[best].copy(), float(scores[best])
        if scores[worst] < self.gworst_score:
            self.gworst, self.gworst_score = self.positions[worst].copy(), float(scores[worst])
        self.history.append(self.gbest_score)
        self.iteration += 1
        if self.stalled:
            return False
        for i in range(len(self.positions)):
            if self.stale[i] >= s.restart_patience:  # restart from its personal best with a fresh velocity
                self.positions[i] = self.pbest[i]
                self.velocities[i] = (np.zeros_like(self.positions[i]) if s.restart_velocity == "zero"
                                      else self.rng.uniform(-1, 1, self.positions[i].shape))
                self.stale[i] = 0
                self.restarts.append((self.iteration, i))
                if not s.restart_moves:
                    continue
            r = self.rng.uniform(0, 1, 4) if s.weight_randomness else np.ones(4)
            w, c, so, b = s.inertia * r[0], s.cognitive * r[1], s.social * r[2], (s.repel * r[3] if s.repel_term else 0.0)
            total = w + c + so + b
            w, c, so, b = w / total, c / total, so / total, b / total
            x = self.positions[i]
            self.velocities[i] = (w * self.velocities[i] + c * (self.pbest[i] - x) + so * (self.gbest - x)
                                  + b * (x - self.gworst))
            self.positions[i] = x + self.step * self.velocities[i]
        self.step = max(self.step * s.step_length_factor, s.minimum_step_length)
        return True

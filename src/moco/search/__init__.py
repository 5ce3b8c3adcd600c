"""Gradient-free search used by methods that optimise on the dev set (particle swarms, ...)."""
from moco.search.pso import ParticleSwarm, SwarmSettings

__all__ = ["ParticleSwarm", "SwarmSettings"]

"""Compare and analyse: sweeps of methods × pools × tasks (`moco compare`), the paper's tables and analyses
(Table 1, collaborative emergence, scaling, diversity, model selection, leave-one-out, robustness, cost), and
a self-contained HTML/markdown report (`moco report`)."""
from moco.analysis.records import Collection, Entry, Run, load
from moco.analysis.sweep import SweepResult, run_sweep
from moco.analysis.sweep_config import SweepConfig, load_sweep, parse_sweep

__all__ = ["Collection", "Entry", "Run", "SweepConfig", "SweepResult", "load", "load_sweep", "parse_sweep",
           "run_sweep"]

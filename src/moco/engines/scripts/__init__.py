"""Standalone scripts run as files by other interpreters (no MoCo import): kept apart from `moco.engines` so that
their directory, first on their sys.path, holds no module named like an engine package (`vllm`)."""

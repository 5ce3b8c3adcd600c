"""Collaboration methods, one per file, registered by name (the reference implementation's names) and alias."""
from moco.methods.registry import MethodInfo, MethodParams, all_methods, get_method, method

__all__ = ["MethodInfo", "MethodParams", "all_methods", "get_method", "method"]

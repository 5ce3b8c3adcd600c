"""In-memory weight arithmetic: per-tensor operations (`tensors`), LoRA deltas (`lora`), composable merge
recipes (`recipe`), the resident model candidates are written into (`workbench`) and the dev-scored search
loop the weight-level methods share (`search`, imported from there: it needs a run context)."""
from moco.merging.lora import LoraAdapter
from moco.merging.recipe import Extrapolate, Linear, LoraMix, LoraSource, Node, Source, TaskArithmetic, average
from moco.merging.workbench import CandidateBackend, Workbench

__all__ = ["CandidateBackend", "Extrapolate", "Linear", "LoraAdapter", "LoraMix", "LoraSource", "Node", "Source",
           "TaskArithmetic", "Workbench", "average"]

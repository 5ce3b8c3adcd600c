"""Model backends behind one protocol, and the pool that loads each model once per process."""
from moco.models.base import Backend, Capabilities, GenRequest, GenResult, Message, SamplingParams

__all__ = ["Backend", "Capabilities", "GenRequest", "GenResult", "Message", "SamplingParams"]

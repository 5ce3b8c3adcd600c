"""Training used by trained methods: LoRA supervised fine-tuning (more trainers live beside it)."""
from moco.training.sft import SFTSettings, train_lora_sft

__all__ = ["SFTSettings", "train_lora_sft"]

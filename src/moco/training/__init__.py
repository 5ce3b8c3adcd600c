"""Training used by trained methods: LoRA SFT, DPO and GRPO, each reusing a finished adapter on resume."""
from moco.training.dpo import DPOSettings, train_lora_dpo
from moco.training.grpo import GRPOSettings, train_lora_grpo
from moco.training.sft import SFTSettings, train_lora_sft

__all__ = ["DPOSettings", "GRPOSettings", "SFTSettings", "train_lora_dpo", "train_lora_grpo", "train_lora_sft"]

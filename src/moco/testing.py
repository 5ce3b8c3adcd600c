"""Helpers for tests (ours and plug-in authors'): tiny random Llama models that share one tokenizer.

A character-level tokenizer with a ChatML template and a ~100K-parameter LlamaForCausalLM load through the
Auto classes like any Hub model, run in milliseconds, and share a vocabulary (as logit- and weight-level
methods require). Their text is gibberish: use them for plumbing, not accuracy.
"""
from __future__ import annotations

import string
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.add_special_tokens(SPECIALS)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = CHATML
    return fast


def build_tiny_llama(path: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2, heads: int = 4,
                     max_positions: int = 4096) -> Path:
    """Save a random tiny Llama with the shared char tokenizer to `path` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, initializer_range=0.2)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # special tokens get zero logits, so the random model writes characters, rarely stops
        model.get_input_embeddings().weight[: len(SPECIALS)] = 0.0
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def mc_dataset(n_dev: int = 4, n_test: int = 8, name: str = "tiny_mc") -> dict:
    """A small multiple-choice dataset in MoCo JSON format (questions about which letter is which)."""
    rows = []
    for i in range(n_dev + n_test):
        ans = "ABCD"[i % 4]
        rows.append({"id": f"q{i}", "question": f"Question {i}: which option is right?",
                     "choices": {k: f"option {k.lower()}{i}" for k in "ABCD"}, "answer": ans})
    return {"name": name, "task_type": "multiple_choice", "dev": rows[:n_dev], "test": rows[n_dev:]}


VLM_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_vlm(path: str | Path, seed: int = 0, hidden: int = 32, image_size: int = 32, patch: int = 8) -> Path:
    """Save a random tiny LLaVA (CLIP vision tower + Llama) with the shared char tokenizer plus an `<image>`
    token, and a processor with a chat template, to `path`. It loads with AutoProcessor and
    AutoModelForImageTextToText like a Hub VLM; its text is gibberish (plumbing only)."""
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    path = Path(path)
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.chat_template = VLM_CHATML
    image_token = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                              num_attention_heads=4, image_size=image_size, patch_size=patch, projection_dim=hidden)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                       tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, initializer_range=0.2)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                      vision_feature_select_strategy="default", vision_feature_layer=-1,
                      image_seq_length=(image_size // patch) ** 2)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    with torch.no_grad():  # as in build_tiny_llama: specials get zero logits, the model writes characters
        model.get_input_embeddings().weight[: len(SPECIALS)] = 0.0
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                                                     crop_size={"height": image_size, "width": image_size}),
                               tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=VLM_CHATML)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path

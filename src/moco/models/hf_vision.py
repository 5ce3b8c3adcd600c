"""Vision-language models from transformers: AutoModelForImageTextToText with its AutoProcessor.

The pool picks this backend when a Hugging Face model's config has a vision tower (LLaVA, Idefics3/SmolVLM,
Qwen2-VL, Gemma-3, ...). Images ride with the last user message as `{"type": "image"}` parts of the
processor's chat template. Decoding uses transformers `generate`: greedy rows are batched (left padding);
sampled rows run one by one under their own seed, so a sampled answer does not depend on its batch
neighbours (the same guarantee the text backend gives with per-row generators).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from moco.errors import ModelError
from moco.models.base import Capabilities, GenRequest, GenResult, SamplingParams, chunk_plan
from moco.models.images import load_image

if TYPE_CHECKING:
    from moco.config import ModelSpec
    from moco.models.backends import PoolContext

log = logging.getLogger(__name__)


def is_vision_config(cfg: Any) -> bool:
    """A transformers config (object or dict) that describes an image-text-to-text model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    d = cfg if isinstance(cfg, dict) else cfg.to_dict()
    return "vision_config" in d and d.get("model_type") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def is_vision_source(source: str, revision: str | None = None, trust_remote_code: bool = False) -> bool:
    """Whether a local folder or Hub id holds a vision-language model (reads only its config)."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except Exception:  # unknown or unreachable: the text backend reports the real problem when loading
        return False
    return is_vision_config(cfg)


class HFVisionBackend:
    """An image-text-to-text model and its processor, loaded once."""

    def __init__(self, source: str, *, fingerprint: str, device: str = "cpu", dtype: str = "auto",
                 revision: str | None = None, adapter: str | None = None, batch_size: int = 8,
                 trust_remote_code: bool = False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from moco.models.hf import pick_device, pick_dtype

        if adapter:
            raise ModelError(f"LoRA adapters on vision-language models are not supported ({source})")
        self.source = source
        self.device = pick_device(device)
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        t0 = time.time()
        try:
            self.processor = AutoProcessor.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
            self.model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=pick_dtype(dtype, self.device), revision=revision,
                trust_remote_code=trust_remote_code).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load vision-language model '{source}': {str(e).splitlines()[0]}") from None
        self.load_seconds = time.time() - t0
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ModelError(f"'{source}': its processor has no tokenizer")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        if not (getattr(self.processor, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)):
            raise ModelError(f"'{source}': the processor has no chat template, so prompts with images cannot be built")
        self.eos_ids = self._eos_ids()
        self._seed_lock = threading.Lock()
        self.capabilities = Capabilities(chat=True, seeded=True, images=True)

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        for special in ("<|im_end|>", "<end_of_utterance>", "<|eot_id|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid >= 0 and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(ids)

    # ---------------------------------------------------------------- prompts
    @staticmethod
    def chat(req: GenRequest) -> list[dict[str, Any]]:
        """Messages in the processor's format; the images go first in the last user message."""
        msgs: list[dict[str, Any]] = [{"role": r, "content": [{"type": "text", "text": c}]} for r, c in req.messages]
        if req.images:
            last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=len(msgs) - 1)
            msgs[last]["content"] = [{"type": "image"} for _ in req.images] + msgs[last]["content"]
        return msgs

    def render(self, req: GenRequest) -> str:
        msgs = self.chat(req)
        try:
            text = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        except Exception:  # templates without a system role: fold it into the first user turn
            if msgs and msgs[0]["role"] == "system" and len(msgs) > 1:
                system = msgs[0]["content"][0]["text"]
                first = msgs[1]
                parts = [p for p in first["content"] if p["type"] == "image"]
                texts = [p for p in first["content"] if p["type"] == "text"]
                texts[0] = {"type": "text", "text": f"{system}\n\n{texts[0]['text']}"}
                msgs = [{"role": first["role"], "content": parts + texts}, *msgs[2:]]
            text = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return text + req.assistant_prefix

    def plan_batches(self, requests: list[GenRequest]) -> list[list[int]]:
        """Longest prompts first (by text length; an image costs the same in every row), fixed-size chunks."""
        order = sorted(range(len(requests)), key=lambda i: (-sum(len(c) for _, c in requests[i].messages), i))
        return chunk_plan(len(requests), self.batch_size, order)

    # ---------------------------------------------------------------- decoding
    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        groups: dict[SamplingParams, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling, []).append(i)
        for sampling, idx in groups.items():
            chunks = [idx] if sampling.greedy else [[i] for i in idx]
            for chunk in chunks:
                t0 = time.time()
                outs = self._decode([requests[i] for i in chunk], sampling)
                dt = time.time() - t0
                for i, o in zip(chunk, outs):
                    o.latency_s = dt / len(chunk)
                    results[i] = o
        return [r for r in results if r is not None]

    def _decode(self, reqs: list[GenRequest], sampling: SamplingParams) -> list[GenResult]:
        import torch

        texts = [self.render(r) for r in reqs]
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(r.images for r in reqs):  # one list per row: the form every processor accepts for batches
            kwargs["images"] = [[load_image(ref) for ref in r.images] for r in reqs]
        inputs = self.processor(**kwargs).to(self.model.device)
        gen: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                               "eos_token_id": self.eos_ids, "do_sample": not sampling.greedy}
        if not sampling.greedy:
            gen.update(temperature=sampling.temperature, top_p=sampling.top_p)
        with torch.no_grad():
            if sampling.greedy:
                out = self.model.generate(**inputs, **gen)
            else:  # one row: its own seed decides its sample
                with self._seed_lock:
                    torch.manual_seed(reqs[0].seed % (2**63))
                    out = self.model.generate(**inputs, **gen)
        width = inputs["input_ids"].shape[1]
        results = []
        for row, r in enumerate(reqs):
            toks = out[row, width:].tolist()
            cut = next((k for k, t in enumerate(toks) if t in self.eos_ids), None)
            finish = "stop" if cut is not None else "length"
            body = toks if cut is None else toks[:cut]
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            if r.sampling.stop:
                hits = [text.find(s) for s in r.sampling.stop if s in text]
                if hits:
                    text, finish = text[: min(hits)], "stop"
            results.append(GenResult(text.strip(), tokens_in=int(inputs["attention_mask"][row].sum()),
                                     tokens_out=len(body) + (cut is not None), finish_reason=finish))
        return results

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


def load(spec: "ModelSpec", ctx: "PoolContext") -> HFVisionBackend:
    """The backend registry's factory (models/backends.py)."""
    return HFVisionBackend(ctx.source(), fingerprint=ctx.fingerprint(), device=ctx.device(), dtype=spec.dtype,
                           revision=spec.revision, adapter=spec.adapter, batch_size=ctx.hardware.batch_size,
                           trust_remote_code=spec.trust_remote_code)

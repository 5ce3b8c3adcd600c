"""Images in requests: cache keys by content, OpenAI image parts, the image task format, the HF VLM backend."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil

import httpx
import pytest

from moco.cache import request_key
from moco.errors import DataError, ModelError
from moco.models.base import GenRequest, SamplingParams
from moco.models.images import data_url, image_key
from moco.models.openai import OpenAIBackend
from moco import aio


@pytest.fixture
def png(tmp_path):
    from PIL import Image

    p = tmp_path / "red.png"
    Image.new("RGB", (20, 10), (255, 0, 0)).save(p)
    return p


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from moco.testing import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "tiny-vlm", seed=0)


def test_text_only_cache_key_is_unchanged():
    """The key of a request without images is the same payload as before images existed."""
    req = GenRequest((("user", "hi"),), SamplingParams(16, 0.7, 0.9), 0)
    payload = {"fp": "f", "messages": [["user", "hi"]], "prefix": "", "sampling": req.sampling.key(), "replica": 0,
               "seed": 3}
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert request_key("f", req, 3) == expected


def test_image_keys_follow_content_not_path(png, tmp_path):
    from PIL import Image

    copy = tmp_path / "copy.png"
    shutil.copy(png, copy)
    blue = tmp_path / "blue.png"
    Image.new("RGB", (20, 10), (0, 0, 255)).save(blue)

    def key(path):
        return request_key("f", GenRequest((("user", "q"),), SamplingParams(8, 0.0), 0, "", (str(path),)), 0)

    text_only = request_key("f", GenRequest((("user", "q"),), SamplingParams(8, 0.0)), 0)
    assert key(png) == key(copy) != key(blue)
    assert key(png) != text_only
    inline = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    assert image_key(inline) == image_key(str(png))
    with pytest.raises(DataError, match="image not found"):
        image_key(str(tmp_path / "missing.png"))


def test_openai_body_carries_image_parts(png):
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "red"}, "finish_reason": "stop"}]})

    b = OpenAIBackend("http://test/v1", "vlm", transport=httpx.MockTransport(handler))
    req = GenRequest((("system", "s"), ("user", "What colour?")), SamplingParams(8, 0.0), 0, "",
                     (str(png), "https://example.org/cat.jpg"))
    assert b.generate([req])[0].text == "red"
    msgs = seen[0]["messages"]
    assert msgs[0] == {"role": "system", "content": "s"}
    parts = msgs[1]["content"]
    assert parts[0] == {"type": "text", "text": "What colour?"}
    assert parts[1]["image_url"]["url"] == data_url(str(png)) and parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(parts[1]["image_url"]["url"].split(",", 1)[1]) == png.read_bytes()
    assert parts[2] == {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}}


def test_builtin_image_task_loads_with_resolved_images():
    from moco.tasks.registry import resolve_task

    t = resolve_task("shapes_vqa").loader()
    assert t.task_type == "multiple_choice" and not t.problems
    assert len(t.dev) == 12 and len(t.test) == 36
    for ex in t.dev + t.test:
        assert len(ex.images) == 1 and "image" not in ex.meta
        assert ex.choices and ex.answer in ex.choices
    assert sorted({ex.answer for ex in t.test}) == list("ABCD")


def test_image_rows_missing_files_are_skipped_and_reported(tmp_path, png):
    from moco.tasks.moco_json import load_moco_json

    row = {"question": "What colour?", "choices": ["red", "blue"], "answer": "A"}
    data = {"task_type": "multiple_choice", "test": [{**row, "image": png.name}, {**row, "image": "gone.png"},
                                                     {**row, "images": [png.name, png.name]}]}
    p = tmp_path / "vqa.json"
    p.write_text(json.dumps(data))
    t = load_moco_json(p)
    assert [len(e.images) for e in t.test] == [1, 2]
    assert t.test[0].images[0] == str(png)
    assert len(t.problems) == 1 and t.problems[0].field == "image" and t.problems[0].action == "skipped"


def test_text_model_refuses_images(tiny_task, cache, tmp_path, png):
    from helpers import scripted_config
    from moco.context import Call
    from moco.runner import plan
    from moco.context import RunContext
    from moco.trace import CallRecorder

    cfg = scripted_config("single_model", tiny_task, ["a"])
    p = plan(cfg)
    ctx = RunContext(pool=p.pool, task=p.task, scorer=p.scorer, cache=cache, recorder=CallRecorder(None),
                     decoding=cfg.decoding)
    with pytest.raises(ModelError, match="cannot read images"):
        aio.run(ctx.generate([Call("a", "What colour?", images=(str(png),))]))


def test_hf_vision_backend_generates_with_images(tiny_vlm, png):
    from moco.models.hf_vision import HFVisionBackend, is_vision_source

    assert is_vision_source(str(tiny_vlm)) and not is_vision_source(str(png.parent))
    b = HFVisionBackend(str(tiny_vlm), fingerprint="tiny-vlm")
    assert b.capabilities.images
    greedy = SamplingParams(6, 0.0)
    with_img = GenRequest((("user", "What colour?"),), greedy, 0, "", (str(png),))
    text_only = GenRequest((("user", "What colour?"),), greedy)
    sampled = GenRequest((("user", "What colour?"),), SamplingParams(6, 1.0, 1.0), 11, "", (str(png),))
    assert "<image>" in b.render(with_img) and "<image>" not in b.render(text_only)
    outs = b.generate([with_img, text_only, sampled])
    assert all(o.tokens_out == 6 and o.finish_reason == "length" for o in outs)  # random models never stop
    assert outs[0].tokens_in > outs[1].tokens_in  # the image became image tokens
    assert b.generate([sampled])[0].text == outs[2].text  # a sampled row depends on its own seed only

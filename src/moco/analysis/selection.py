"""Model selection (paper Figure 5): choose k of n candidate models for a task.

- prompt: an LLM reads the task description and every candidate's description and names k of them
  (one greedy call through `ctx.generate`, so it is cached and traced like any model call);
- embedding: the candidates' descriptions are embedded (all-MiniLM by default) and the k whose embeddings
  are most mutually distant (largest sum of pairwise cosine distances) are chosen;
- random: `repeats` seeded random subsets (their mean is the baseline).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np

from moco.config import ENGINE_KEYS, ModelSpec
from moco.errors import ConfigError, ModelError
from moco.rundir import write_json

EXHAUSTIVE_LIMIT = 200_000  # subsets; beyond it the spread-maximising subset is built greedily


def selection_prompt(task_name: str, task_description: str, example: str | None,
                     candidates: list[tuple[str, str]], k: int) -> str:
    lines = "\n".join(f"{i + 1}. {name}: {desc}" for i, (name, desc) in enumerate(candidates))
    ex = f"\nAn example question from the task:\n{example.strip()[:600]}\n" if example else ""
    return (f"We need a team of {k} AI models to collaborate on the task '{task_name}'"
            f"{': ' + task_description if task_description else ''}.\n{ex}\n"
            f"Candidate models:\n{lines}\n\n"
            f"Choose the {k} models whose expertise together best covers this task, preferring a diverse team. "
            f"Answer with exactly {k} distinct numbers from the list, in the form \"Models: 1, 2, 3\".")


def parse_choice(reply: str, n: int, k: int, names: list[str] | None = None) -> tuple[list[int], int]:
    """The first k distinct valid picks (numbers 1..n, or model names) in the reply, and how many were missing.
    Missing picks are filled in pool order by the caller and reported, never hidden."""
    text = reply.split("Models:", 1)[1] if "Models:" in reply else reply
    picks: list[int] = []
    tokens = re.findall(r"\d+|[A-Za-z][\w.#-]*", text)
    lowered = {nm.lower(): i for i, nm in enumerate(names or [])}
    for tok in tokens:
        i = int(tok) - 1 if tok.isdigit() else lowered.get(tok.lower(), -1)
        if 0 <= i < n and i not in picks:
            picks.append(i)
        if len(picks) == k:
            break
    return picks, k - len(picks)


def fill(picks: list[int], n: int, k: int) -> list[int]:
    out = list(picks)
    for i in range(n):
        if len(out) >= k:
            break
        if i not in out:
            out.append(i)
    return sorted(out)


def max_spread_subset(dist: np.ndarray, k: int) -> list[int]:
    """Indices of the k points with the largest sum of pairwise distances (exhaustive when feasible,
    else greedy from the farthest pair); ties go to the lexicographically first subset."""
    n = dist.shape[0]
    if k >= n:
        return list(range(n))
    if k == 1:
        return [int(np.argmax(dist.sum(axis=1)))]
    if math.comb(n, k) <= EXHAUSTIVE_LIMIT:
        best, best_v = None, -1.0
        for combo in itertools.combinations(range(n), k):
            v = float(sum(dist[i, j] for i, j in itertools.combinations(combo, 2)))
            if v > best_v + 1e-12:
                best, best_v = combo, v
        return list(best)
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    chosen = sorted({int(i), int(j)})
    while len(chosen) < k:
        rest = [c for c in range(n) if c not in chosen]
        chosen.append(max(rest, key=lambda c: (float(dist[c, chosen].sum()), -c)))
    return sorted(chosen)


def embed(texts: list[str], encoder: str) -> np.ndarray:
    """Unit-norm sentence embeddings of `texts` with a local sentence-transformers model."""
    from moco.models import builtin

    path = str(builtin.ensure_converted(encoder)) if builtin.is_embedded(encoder) else encoder
    if not Path(path).expanduser().is_dir():
        raise ModelError(f"sentence encoder '{encoder}' is neither an embedded model nor a local folder")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelError("embedding selection needs sentence-transformers (pip install 'moco[router]')") from None

    model = SentenceTransformer(path, device="cpu")
    return np.asarray(model.encode(texts, normalize_embeddings=True, convert_to_numpy=True))


def embedding_choice(descriptions: list[str], k: int, encoder: str) -> tuple[list[int], np.ndarray]:
    emb = embed(descriptions, encoder)
    dist = 1.0 - emb @ emb.T
    np.fill_diagonal(dist, 0.0)
    return max_spread_subset(dist, k), dist


def random_choices(n: int, k: int, repeats: int, seed: int, task: str) -> list[list[int]]:
    rng = random.Random(f"{seed}:{task}:random-selection")
    return [sorted(rng.sample(range(n), k)) for _ in range(repeats)]


async def prompt_choice(sweep, task_name: str, data_dir: str | None, cache, out_dir: Path,
                  candidates: list[tuple[str, str]], k: int, file_stem: str) -> dict[str, Any]:
    """Ask the selector LLM (one greedy call through ctx.generate) and parse its picks."""
    from moco.context import Call, RunContext
    from moco.models.pool import ModelPool
    from moco.scoring import scorer_for
    from moco.tasks.registry import resolve_task
    from moco.trace import CallRecorder

    sel = sweep.analyses.selection
    models = sweep.pools[sel.pool].models
    if isinstance(sel.selector, ModelSpec):
        spec = sel.selector
    elif sel.selector is None:
        spec = models[0]
    else:
        names = [c[0] for c in candidates]
        if isinstance(sel.selector, int):
            if not 0 <= sel.selector < len(models):
                raise ConfigError(f"analyses.selection.selector: index {sel.selector} outside the pool")
            spec = models[sel.selector]
        elif sel.selector in names:
            spec = models[names.index(sel.selector)]
        else:
            raise ConfigError(f"analyses.selection.selector: no model named '{sel.selector}' in pool '{sel.pool}'")
    spec = spec.model_copy(update={"role_prompt": None, "name": "selector"})  # a neutral judge, not an expert
    task = resolve_task(task_name, data_dir).loader()
    try:
        scorer = scorer_for(task.task_type, task.name)
    except ConfigError:
        scorer = None
    pool = ModelPool([spec], sweep.hardware)
    pool.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder = CallRecorder(out_dir / f"{file_stem}.calls.jsonl")
    try:
        ctx = RunContext(pool=pool, task=task, scorer=scorer, cache=cache, recorder=recorder,
                         decoding=sweep.decoding, seed=sweep.seed)
        example = (task.dev or task.test)[0].input if (task.dev or task.test) else None
        prompt = selection_prompt(task.name, task.description, example, candidates, k)
        reply = (await ctx.generate([Call(0, prompt, ctx.sampling(temperature=0.0, max_new_tokens=64))], tag="select"))[0]
    finally:
        recorder.close()
    picks, missing = parse_choice(reply.text, len(candidates), k, [c[0] for c in candidates])
    return {"prompt": prompt, "reply": reply.text, "failed": reply.failed, "parsed": sorted(picks),
            "filled_in_pool_order": missing, "chosen": fill(picks, len(candidates), k)}


async def choose_all(sweep, data_dir: str | None, cache, out_dir: Path, log=None) -> dict[str, dict[str, list[list[int]]]]:
    """Run every selection strategy for every task in scope; each task's record goes to
    out_dir/<task>.json and is reused when its inputs are unchanged."""
    from moco.analysis.sweep_cells import model_names, slug
    from moco.tasks.registry import resolve_task

    sel = sweep.analyses.selection
    models = sweep.pools[sel.pool].models
    names = model_names(models)
    if sel.k > len(models):
        raise ConfigError(f"analyses.selection.k = {sel.k} but pool '{sel.pool}' has only {len(models)} models")
    candidates = [(nm, s.description or s.role_prompt or s.model) for nm, s in zip(names, models)]
    tasks = sel.tasks or [t.name for t in sweep.tasks]
    out: dict[str, dict[str, list[list[int]]]] = {}
    for task in tasks:
        inputs = {"candidates": candidates, "k": sel.k, "strategies": sel.strategies, "repeats": sel.random_repeats,
                  "selector": sel.selector.model_dump(mode="json") if isinstance(sel.selector, ModelSpec)
                  else sel.selector, "encoder": sel.encoder, "seed": sweep.seed, "task": task,
                  "generation": {**sweep.decoding.model_dump(mode="json"),  # the former section: old records still match
                                 **sweep.hardware.model_dump(mode="json", include=set(ENGINE_KEYS))}}
        digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
        shown = slug(resolve_task(task, data_dir or _task_dir(sweep, task)).name)
        path = out_dir / f"{shown}.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("inputs_hash") == digest:
                out[task] = old["subsets"]
                continue
        record: dict[str, Any] = {"task": task, "inputs_hash": digest, "candidates": candidates, "k": sel.k}
        subsets: dict[str, list[list[int]]] = {}
        for strategy in sel.strategies:
            if strategy == "random":
                subsets["random"] = random_choices(len(models), sel.k, sel.random_repeats, sweep.seed, task)
            elif strategy == "embedding":
                idx, dist = embedding_choice([c[1] for c in candidates], sel.k, sel.encoder)
                subsets["embedding"] = [idx]
                record["embedding"] = {"encoder": sel.encoder, "distances": np.round(dist, 4).tolist()}
            else:
                info = await prompt_choice(sweep, task, data_dir or _task_dir(sweep, task), cache, out_dir, candidates, sel.k,
                                     shown)
                subsets["prompt"] = [info["chosen"]]
                record["prompt"] = info
            if log:
                log(f"selection {task} {strategy}: " + "; ".join(
                    ", ".join(names[i] for i in s) for s in subsets[strategy]))
        record["subsets"] = subsets
        write_json(path, record)
        out[task] = subsets
    return out


def _task_dir(sweep, task: str) -> str | None:
    return next((t.data_dir for t in sweep.tasks if t.name == task), None)

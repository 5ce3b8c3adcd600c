"""What each built-in method needs from its task and models, by params and roles (see `moco.requirements`).

Each function mirrors the method's own code path: where the method would call `ctx.dev_best()`, read
`ctx.dev`, score outcomes, ask for log-probabilities or train a model, its declaration says so, so that
`moco validate`/`run`/`serve` refuse the config before a model loads instead of the method failing after.
Methods absent here need nothing beyond `needs=` capabilities, `min_models` and `objective_task_only`.
"""
from __future__ import annotations

from typing import Any

from moco.requirements import Declaration, Facts, Need, dev_pick


def _dev(why: str) -> Need:
    return Need("dev", why)


def single_model(p: Any, f: Facts) -> list[Need]:
    if p.model is None and len(f.models) > 1:
        return [Need("dev", "answers with its dev-best model", default_param="model", chooses="answering model")]
    return []


def summarizer_final(p: Any, f: Facts) -> list[Need]:  # refine, feedback
    return dev_pick(f, p.summarizer, "summarizer", "summarizer", "summarizer") if p.final == "summarizer" else []


def mixture_of_agents(p: Any, f: Facts) -> list[Need]:
    return dev_pick(f, p.aggregator, "aggregator", "aggregator", "aggregator")


def self_moa(p: Any, f: Facts) -> list[Need]:
    return dev_pick(f, p.proposer, "proposer", "proposer", "proposer")


def knowledge_card(p: Any, f: Facts) -> list[Need]:
    return dev_pick(f, p.answerer, "answerer", "answerer", "answerer")


def structure(p: Any, f: Facts) -> list[Need]:
    return dev_pick(f, p.final_model, "final", "final_model", "final model") if p.final != "vote" else []


def llm_blender(p: Any, f: Facts) -> list[Need]:
    needs: list[Need] = []
    for role, other, ref in (("ranker", "fuser", p.ranker), ("fuser", "ranker", p.fuser)):
        other_bound = f.roles.get(other)
        if other_bound is not None and ref is None and role not in f.roles and not _candidate(f, other_bound):
            continue  # a non-candidate model bound to the other role does both
        needs += dev_pick(f, ref, role, role, role)
    trains = [r for r, on in (("ranker", p.train_ranker_on_dev), ("fuser", p.train_fuser_on_dev)) if on]
    if trains:
        needs += [_dev(f"trains its {' and '.join(trains)} on dev answers"),
                  Need("scores", f"trains its {' and '.join(trains)} on scored dev answers")]
        for r, ref in (("ranker", p.ranker), ("fuser", p.fuser)):
            if r in trains:
                h = f.model(ref) if ref is not None else f.roles.get(r)
                needs.append(Need("trainable", f"LoRA-trains its {r}",
                                  (h,) if h is not None else () if ref is not None else tuple(f.models)))
    return needs


def _candidate(f: Facts, h: Any) -> bool:
    """Whether `h` is one of the pool's models (same model and adapter), as llm_blender's `candidate_of`."""
    return any(m is h or (m.spec.model, m.spec.adapter) == (h.spec.model, h.spec.adapter) for m in f.models)


def vote_tie(p: Any, f: Facts) -> list[Need]:  # majority vote, SLM-MUX
    return [_dev("breaks ties by dev score (tie: dev-based)")] if p.tie == "dev-based" else []


def colm(p: Any, f: Facts) -> list[Need]:
    if "server" in f.roles or len(f.models) == 1:
        return []
    return [Need("dev", "picks its server by dev score", default_role="server", chooses="server")]


def prompt_routing(p: Any, f: Facts) -> list[Need]:
    # the router, unless given, is the dev-best model; an unreadable router reply falls back to the dev-best
    return [_dev("falls back to its dev-best model when the router's reply names no model")]


def cascade(p: Any, f: Facts) -> list[Need]:
    if p.mode != "logit":
        return []
    order = list(f.models)
    if p.costs is not None and len(p.costs) == len(order):
        order = [order[i] for i in sorted(range(len(order)), key=lambda i: (p.costs[i], i))]
    needs = [Need("logprobs", "in mode logit reads token probabilities (use mode: just_ask)", tuple(order[:-1]))]
    if p.thresholds is None:
        needs.append(_dev("calibrates its thresholds on dev (give `thresholds` or use mode just_ask)"))
    return needs


def router_eval(p: Any, f: Facts) -> list[Need]:
    return [_dev("calibrates cascade thresholds on dev"), Need("scores", "routes by scored outcomes"),
            Need("logprobs", "reads token probabilities", tuple(f.models))]


def graph_routing(p: Any, f: Facts) -> list[Need]:
    return [_dev("learns its graph router from dev outcomes"), Need("scores", "routes by scored outcomes")]


def trained_router(p: Any, f: Facts) -> list[Need]:
    needs = [_dev("trains its router on dev outcomes"), Need("scores", "routes by scored outcomes")]
    if p.router_base is None:  # else a model id/folder that check_spec resolves when the method runs
        bound = f.roles.get("router")
        needs.append(Need("trainable", "LoRA-trains its router (the `router` role, else the dev-best model)",
                          (bound,) if bound is not None else tuple(f.models)))
    return needs


def switch_generation(p: Any, f: Facts) -> list[Need]:
    given = p.selector is not None or "selector" in f.roles
    trains = p.selector_mode == "trained" or p.selector_mode == "auto" and not given
    if not trains:
        return []
    ref = p.selector_base
    base = f.model(ref) if ref is not None else f.roles.get("selector_base") or f.models[0]
    return [_dev("trains its selector on dev rollouts (give a selector, or selector_mode: random)"),
            Need("scores", "labels its selector's training data by scored rollouts"),
            *([Need("trainable", "LoRA-trains its selector", (base,))] if base is not None else [])]


def agglm(p: Any, f: Facts) -> list[Need]:
    needs = [_dev("trains its aggregator on dev problems")]
    ref = p.aggregator
    target = f.model(ref) if ref is not None else f.roles.get("aggregator")
    if target is not None or ref is None:
        needs.append(Need("trainable", "trains its aggregator with GRPO (the `aggregator` role, else the dev-best "
                          "model)", (target,) if target is not None else tuple(f.models)))
    return needs


def nudging(p: Any, f: Facts) -> list[Need]:
    return [_dev("searches gamma/the nudging model on dev")] if p.search_gamma or p.search_nudging else []


def mentor_collab(p: Any, f: Facts) -> list[Need]:
    return [_dev("learns its branch classifier on dev (mode: train)")] if p.mode == "train" else []


def contrastive(p: Any, f: Facts) -> list[Need]:
    return [_dev("ranks its models by dev score (mode: contrastive)")] if p.mode == "contrastive" else []


def expo(p: Any, f: Facts) -> list[Need]:
    return [_dev("ranks strong and weak by dev score (give both)")] if p.strong is None and p.weak is None else []


def dare_ties(p: Any, f: Facts) -> list[Need]:
    return [_dev("searches its merge weights on dev (weights: search)")] if p.weights == "search" else []


def always(why: str) -> Declaration:
    return lambda p, f: [_dev(why)]


BUILTIN: dict[str, Declaration] = {
    "single_model": single_model,
    "text_multiagent_refine": summarizer_final,
    "text_multiagent_feedback": summarizer_final,
    "text_mixture_of_agents": mixture_of_agents,
    "text_self_moa": self_moa,
    "text_knowledge_card": knowledge_card,
    "text_structure": structure,
    "text_llm_blender": llm_blender,
    "text_majority_vote": vote_tie,
    "text_slm_mux": vote_tie,
    "text_heterogeneous_swarms": always("searches its graph on dev"),
    "text_agglm": agglm,
    "text_multiagent_finetuning": always("debates on dev problems to make its training data"),
    "text_sparta": always("uses dev prompts as instructions"),
    "client_server_colm": colm,
    "api_prompt_routing": prompt_routing,
    "api_cascade": cascade,
    "api_router_eval": router_eval,
    "api_graph_routing": graph_routing,
    "api_trained_router": trained_router,
    "api_switch_generation": switch_generation,
    "api_nudging": nudging,
    "api_mentor_collab": mentor_collab,
    "api_collm": always("trains its deferral head on dev"),
    "logit_logit_contrastive": contrastive,
    "weight_expo": expo,
    "weight_dare_ties": dare_ties,
    "weight_greedy_soup": always("ranks and keeps models by dev score"),
    "weight_model_swarms": always("scores its particles on dev"),
    "weight_lorahub": always("learns its weights on dev examples"),
}

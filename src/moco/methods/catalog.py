"""What `moco list methods` and name lookups need to know of every built-in method, without importing it.

Importing a method's module runs its `@method` decorator (the truth); this table repeats the name, module,
level, model counts, aliases, required capabilities and summary so that listing methods, or validating a
config of one method, imports only that method's module (no torch for a text method). A test checks that
the table matches the decorators; regenerate it with `python -W ignore -m moco.methods.catalog --write`.
"""
from __future__ import annotations

from typing import NamedTuple


class Row(NamedTuple):
    name: str
    target: str  # "module:function" of the decorated run function
    level: str
    min_models: int
    max_models: int | None
    aliases: tuple[str, ...]
    needs: tuple[str, ...]  # capabilities beyond chat (logits, weights, lora, ...)
    summary: str


# --- generated: python -m moco.methods.catalog --write
BUILTIN: tuple[Row, ...] = (
    Row('api_cascade', 'moco.methods.api.cascade:run', 'api', 2, None, ('cascade',),
        (), "Models answer cheapest first; an answer below its model's dev-calibrated confidence defers"),
    Row('api_collm', 'moco.methods.api.collm:run', 'api', 2, 2, ('collm', 'co_llm'),
        ('logits',), 'A deferral head trained on dev (marginal likelihood) picks, per token, generator or mentor (threshold chosen on dev)'),
    Row('api_graph_routing', 'moco.methods.api.graph_routing:run', 'api', 2, None, ('graph_routing', 'graph_router', 'graphrouter'),
        (), 'A GNN over task, query and model nodes, trained on dev outcomes (performance, cost), routes queries'),
    Row('api_mentor_collab', 'moco.methods.api.mentor_collab:run', 'api', 2, None, ('mentor_collab', 'mentorcollab'),
        ('logits',), 'At sampled words the mentor proposes a segment where it disagrees; the generator or a trained MLP picks'),
    Row('api_nudging', 'moco.methods.api.nudging:run', 'api', 2, None, ('nudging',),
        ('logits',), 'A base model decodes; where its top-1 token probability < gamma a nudging model writes the next word'),
    Row('api_prompt_routing', 'moco.methods.api.prompt_routing:run', 'api', 2, None, ('prompt_routing', 'prompt_router'),
        (), 'A router LM reads model descriptions and the query and picks the model that answers'),
    Row('api_router_eval', 'moco.methods.api.router_eval:run', 'api', 2, None, ('router_eval', 'routellm_eval', 'offline_routing'),
        (), 'Every model answers once; routers and cascade thresholds are swept offline (quality vs. share of calls to the most expensive model)'),
    Row('api_switch_generation', 'moco.methods.api.switch_generation:run', 'api', 2, None, ('switch_generation', 'switch'),
        (), 'Models take turns writing patches of the answer; a given or dev-trained selector LM picks each turn'),
    Row('api_trained_router', 'moco.methods.api.trained_router:run', 'api', 2, None, ('trained_router',),
        (), 'LoRA-train a router LM on the best model per dev item; at test the routed model answers'),
    Row('client_server_colm', 'moco.methods.client_server.client_server_colm:run', 'client_server', 1, None, ('colm', 'client_server'),
        (), "Top-k relevant clients answer, a server synthesises guidance, every client revises; rounds; the output is a client's refined answers"),
    Row('client_server_colm_client', 'moco.methods.client_server.client_server_colm_client:run', 'client_server', 1, None, ('colm_client',),
        (), 'CoLM client process: answer locally, exchange with a remote colm-server, revise locally'),
    Row('client_server_colm_vlm', 'moco.methods.client_server.client_server_colm_vlm:run', 'client_server', 2, None, ('colm_vlm',),
        ('images',), 'VLMs answer an image question; all answers concatenated and fed back; each VLM refines'),
    Row('logit_logit_contrastive', 'moco.methods.logit.logit_contrastive:run', 'logit', 2, None, ('logit_contrastive', 'contrastive'),
        ('logits',), 'Decode with p_top1 + α(Σ top-k − Σ bottom-k) by dev rank; or proxy tuning base + α(expert − anti)'),
    Row('logit_logit_fusion', 'moco.methods.logit.logit_fusion:run', 'logit', 2, None, ('logit_fusion', 'fusion'),
        ('logits',), "Decode from the average of the models' next-token distributions (shared vocabulary)"),
    Row('single_model', 'moco.methods.single_model:run', 'baseline', 1, None, ('single',),
        (), 'Each model answers alone; output = the dev-best model (per-model test scores reported)'),
    Row('text_agglm', 'moco.methods.text.agglm:run', 'text', 2, None, ('agglm',),
        (), "An aggregator trained with GRPO on dev (verifiable rewards, hard and easy sets balanced) combines the models' answers"),
    Row('text_bbmas', 'moco.methods.text.bbmas:run', 'text', 2, None, ('bbmas', 'blackboard'),
        (), 'Agents (one per model) take turns on a shared blackboard with five actions; a final vote among conclusions'),
    Row('text_heterogeneous_swarms', 'moco.methods.text.heterogeneous_swarms:run', 'text', 2, None, ('heterogeneous_swarms', 'hswarms'),
        (), "Models as nodes of a DAG, outputs flowing along its edges; role-step (the graph, by PSO on dev) and weight-step (the models' weights, by PSO on their JFK-scores) alternate; 10 particles"),
    Row('text_knowledge_card', 'moco.methods.text.knowledge_card:run', 'text', 2, None, ('knowledge_card',),
        (), 'Every model writes a knowledge paragraph; the answering model answers with all of them'),
    Row('text_llm_blender', 'moco.methods.text.llm_blender:run', 'text', 2, None, ('llm_blender', 'blender'),
        (), 'Candidates from every model, ranked pairwise in both orders by a ranker, top-k fused by a fuser; ranker and fuser optionally LoRA-trained on dev'),
    Row('text_majority_vote', 'moco.methods.text.majority_vote:run', 'text', 2, None, ('majority_vote', 'vote'),
        (), 'Every model answers; plurality vote over extracted answers with a defined tie-break'),
    Row('text_mixture_of_agents', 'moco.methods.text.mixture_of_agents:run', 'text', 2, None, ('mixture_of_agents', 'moa'),
        (), "Layers of proposers, each seeing the previous layer's answers; an aggregator synthesizes the last"),
    Row('text_multiagent_feedback', 'moco.methods.text.multiagent_feedback:run', 'text', 2, None, ('multiagent_feedback', 'feedback'),
        (), 'Models answer, give each other feedback and refine on it for `rounds` rounds; a summarizer concludes'),
    Row('text_multiagent_finetuning', 'moco.methods.text.multiagent_finetuning:run', 'text', 2, None, ('multiagent_finetuning', 'maft'),
        ('lora',), 'Agents debate on dev; consensus answers build generation/critic SFT data per agent; the fine-tuned agents debate and vote on test'),
    Row('text_multiagent_refine', 'moco.methods.text.multiagent_refine:run', 'text', 2, None, ('multiagent_refine', 'debate'),
        (), "Models answer, then revise for `rounds` rounds seeing the others' answers; a summarizer concludes"),
    Row('text_self_moa', 'moco.methods.text.self_moa:run', 'text', 1, None, ('self_moa',),
        (), 'The best model samples several answers; aggregate-and-synthesize combines them at once (Self-MoA) or in a sliding window (Self-MoA-Seq)'),
    Row('text_slm_mux', 'moco.methods.text.slm_mux:run', 'text', 2, None, ('slm_mux',),
        (), "k samples per model; the most self-consistent model's majority answer wins, ties by dev score"),
    Row('text_sparta', 'moco.methods.text.sparta:run', 'text', 3, None, ('sparta', 'sparta_alignment'),
        ('lora',), 'Pairs of models answer dev instructions, the others judge weighted by reputation; every model is DPO-trained on the preferences; the best of base and trained models on held-out dev answers'),
    Row('text_structure', 'moco.methods.text.structure:run', 'text', 2, None, ('structure', 'structured_interaction'),
        (), 'Rounds of answer updates over a graph (chain, tree, star, circle, complete, custom): each model sees its 1-hop in-neighbours'),
    Row('weight_dare_ties', 'moco.methods.weight.dare_ties:run', 'weight', 2, None, ('dare_ties',),
        ('weights',), 'DARE drop-and-rescale + TIES sign consensus of task vectors vs a base; weights uniform or PSO-searched'),
    Row('weight_expo', 'moco.methods.weight.expo:run', 'weight', 2, None, ('expo',),
        ('weights',), 'Extrapolate x_top + α(x_top − x_bottom) from the dev-ranked top-k and bottom-k models; α fixed or searched'),
    Row('weight_greedy_soup', 'moco.methods.weight.greedy_soup:run', 'weight', 2, None, ('greedy_soup', 'soup'),
        ('weights',), 'Greedy soup: add models by dev rank to a uniform weight average while the dev score does not drop'),
    Row('weight_lorahub', 'moco.methods.weight.lorahub:run', 'weight', 2, None, ('lorahub',),
        ('weights',), 'Gradient-free (nevergrad) search of scalar weights composing LoRA adapters, L1-regularised few-shot cross-entropy'),
    Row('weight_model_swarms', 'moco.methods.weight.model_swarms:run', 'weight', 2, None, ('model_swarms', 'swarms'),
        ('weights',), "Particle swarm over the experts' weights (or LoRA adapters), dev score as fitness; output = global best"),
)
# --- end generated


def rows_from_decorators() -> list[Row]:
    """The table as the decorators define it (imports every built-in method module)."""
    from moco.methods.registry import load_builtin_modules, registered

    load_builtin_modules()
    out = []
    for info in registered().values():
        if not info.run.__module__.startswith("moco.methods."):
            continue  # plug-ins and test methods
        needs = tuple(k for k, v in info.needs.__dict__.items() if v and k != "chat")
        out.append(Row(info.name, f"{info.run.__module__}:{info.run.__name__}", info.level, info.min_models,
                       info.max_models, tuple(info.aliases), needs, info.summary))
    return sorted(out)


def _render(rows: list[Row]) -> str:
    body = "".join(f"    Row({r.name!r}, {r.target!r}, {r.level!r}, {r.min_models}, {r.max_models}, {r.aliases!r},\n"
                   f"        {r.needs!r}, {r.summary!r}),\n" for r in rows)
    return f"BUILTIN: tuple[Row, ...] = (\n{body})\n"


if __name__ == "__main__":  # --write: rewrite the generated block from the decorators; else print it
    import sys
    from pathlib import Path

    block = _render(rows_from_decorators())  # (run with -W ignore: moco.methods imports this module first)
    if "--write" in sys.argv:
        path = Path(__file__)
        text = path.read_text()
        start = text.index("\n", text.index("# --- generated")) + 1
        end = text.index("# --- end generated")
        path.write_text(text[:start] + block + text[end:])
    else:
        print(block, end="")

"""The CoLM paper's Table 2 shape on the embedded model: clients alone, clients refined, MoA, server output.

    python examples/colm_paper_table.py [--config examples/colm_pseudo_experts.yaml] [--out runs/colm_table]
                                        [--limit N]

Runs the CoLM config (its metrics hold every client alone and refined and the server output), then
Mixture-of-Agents on the same models — the clients as proposers, the CoLM server as aggregator, as many
proposer layers as CoLM has rounds — and prints one table, also written to OUT/table.md and table.json.

Mixture-of-Agents: if the library has the method `text_mixture_of_agents` (another branch), it is used.
Otherwise this script registers a small stand-in, `colm_table_moa`, written from the MoA paper (Wang et
al. 2024): layer 1, every proposer answers; layers 2..L, every proposer answers again seeing all answers of
the previous layer; the aggregator synthesises the last layer's answers. It is a comparison baseline for
this table only, not a library method.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import Field

from moco.config import load_config
from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, all_methods, method
from moco.runner import run_experiment

MOA_NAME = "text_mixture_of_agents"


class StandInParams(MethodParams):
    layers: int = Field(3, ge=2, le=10, description="proposer layers + the aggregator layer (MoA paper: 3)")


def moa_prompt(question: str, answers: list[str]) -> str:
    shown = "\n\n".join(f"{i}. {a}" for i, a in enumerate(answers, 1))
    return ("You have been given answers from several models to the question below. Synthesise them into one "
            "answer of high quality: evaluate them critically, as some may be wrong, and do not simply copy one.\n\n"
            f"Question:\n{question}\n\nAnswers:\n{shown}\n\nYour answer. Keep the answer format the question asks for.")


@method("colm_table_moa", params=StandInParams, level="text", min_models=1,
        roles={"aggregator": "synthesises the last layer (default: the first model)"},
        summary="Mixture-of-Agents stand-in for examples/colm_paper_table.py")
def moa_stand_in(ctx: RunContext, params: StandInParams) -> list[Output]:
    proposers, test = ctx.models, ctx.test
    aggregator = ctx.role("aggregator") or proposers[0]
    with ctx.phase("test"):
        layer = ctx.answer_all(test, tag="moa layer 1")
        for k in range(2, params.layers):
            calls = [Call(m, moa_prompt(ex.prompt, [layer[p.index][j].text for p in proposers]), images=ex.images)
                     for m in proposers for j, ex in enumerate(test)]
            flat = ctx.generate(calls, tag=f"moa layer {k}")
            layer = [flat[i * len(test):(i + 1) * len(test)] for i in range(len(proposers))]
        finals = ctx.generate([Call(aggregator, moa_prompt(ex.prompt, [layer[p.index][j].text for p in proposers]),
                                    images=ex.images) for j, ex in enumerate(test)], tag="moa aggregate")
    return [Output(f.text, failed=f.failed, trace={"aggregator": aggregator.name}) for f in finals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(Path(__file__).parent / "colm_pseudo_experts.yaml"))
    ap.add_argument("--out", default="runs/colm_table")
    ap.add_argument("--limit", type=int, default=None, help="first N test questions only")
    args = ap.parse_args()
    out = Path(args.out)
    cfg = load_config(args.config)
    if args.limit:
        cfg.task.test_limit = args.limit
    colm = run_experiment(cfg, out / "colm")
    rounds = colm.metrics["colm"]["rounds"]
    registered = all_methods()
    moa_method = MOA_NAME if MOA_NAME in registered else "colm_table_moa"
    roles = {r: cfg.roles["server"] for r in registered[moa_method].roles if r in ("aggregator",)}
    moa_params = {"layers": rounds + 1} if moa_method == "colm_table_moa" else {}
    moa_cfg = cfg.model_copy(update={"method": moa_method, "params": moa_params, "roles": roles})
    moa = run_experiment(moa_cfg, out / "moa")

    rows = colm.metrics["colm"]["table"]
    server = next(r for r in rows if r["system"] == "server output")
    moa_score = moa.metrics["score"]
    table = [r for r in rows if r is not server]
    table.append({"system": f"MoA ({moa_method})", "setting": f"{rounds + 1} layers", "score": moa_score,
                  "n": moa.metrics["n"]})
    table.append(server)
    alone = {r["system"]: r["score"] for r in rows if r["setting"] == "alone"}
    lines = [f"task {colm.metrics['task']} ({colm.metrics['n']} questions), {colm.metrics['metric']}; CoLM: "
             f"top_k={colm.metrics['colm']['top_k']}, rounds={rounds}, server={colm.metrics['colm']['server']}", "",
             "| system | setting | score | vs alone | vs MoA |", "|---|---|---|---|---|"]
    for r in table:
        base = alone.get(r["system"].rstrip("*")) if r["system"].endswith("*") else None
        vs_alone = f"{r['score'] - base:+.3f}" if base is not None else ""
        vs_moa = "" if r["system"].startswith("MoA") or r["setting"] == "alone" else f"{r['score'] - moa_score:+.3f}"
        lines.append(f"| {r['system']} | {r['setting']} | {r['score']:.3f} | {vs_alone} | {vs_moa} |")
    cost = {"colm": colm.metrics["total"], "moa": moa.metrics["total"]}
    lines += ["", f"calls / tokens out: CoLM {cost['colm']['calls']} / {cost['colm']['tokens_out']}, "
              f"MoA {cost['moa']['calls']} / {cost['moa']['tokens_out']}",
              "per round (Figure 4): " + json.dumps(colm.metrics["colm"]["per_round"])]
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    (out / "table.json").write_text(json.dumps({"table": table, "cost": cost, "moa_method": moa_method,
                                                "per_round": colm.metrics["colm"]["per_round"]}, indent=1))


if __name__ == "__main__":
    main()

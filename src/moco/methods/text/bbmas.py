"""text_bbmas: a blackboard multi-agent system — every model of the pool is one agent.

Per question, a blackboard holds the problem and the agents' entries. Each iteration:
1. `max_num_agents_to_act` agents are drawn (seeded) to act, plus any agent idle for `agent_idle_threshold`
   iterations; each first chooses one of five actions — propose a strategy, execute a step, critique, verify,
   terminate — (a reply with no single recognisable action is retried up to `max_num_retries` times with fresh
   samples, then the turn is lost and recorded as invalid);
2. each acting agent performs its action; the output becomes a blackboard entry;
3. termination. `termination: consensus` (default; the paper's rule — the cycle repeats until the blackboard
   holds a consensus, not until one agent says so): a terminate entry is that agent's standing conclusion
   (its latest one counts); the board closes once `min_num_agents_to_stop` different agents (default: a
   majority of the agents) have a standing conclusion, and those conclusions go to the vote.
   `termination: iteration` (the reference implementation): the board closes as soon as at least
   `min_num_agents_to_stop` (default 1) agents chose terminate in one iteration, and that iteration's entries
   with a `FINAL:` section are the conclusions (all its entries if none has one) — with the defaults one agent
   can then end iteration 1 alone and nobody votes.
Agents acting in the same iteration act simultaneously (each sees the board as the iteration began).
If `max_iterations` pass without termination, every agent writes a final solution from the blackboard (the
reference implementation outputs "No conclusion." there). With several conclusions every agent votes
("Therefore, I vote for Conclusion #k"; unparseable votes are retried, then abstain); the plurality wins
(ties: the earlier conclusion).

Every step is one batched call across all questions whose blackboard is still open. Fixed from the reference:
all agents ran on one shared model (the dev-best); the fifth action (verify) was documented but missing; the
iteration cap gave no conclusion; the generation settings were ignored (8192 tokens, temperature 1). The
blackboard shows each action's output; the agent's action-selection reasoning is kept in the trace only.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from moco.context import Call, Output, RunContext
from moco.methods.registry import MethodParams, method
from moco.models.pool import ModelHandle

ACTIONS = {  # action -> (the sentence that chooses it, keywords accepted when the sentence is not exact)
    "strategy": ("I choose to propose a solving strategy.", ("strategy", "propose")),
    "execute": ("I choose to execute a solution step.", ("execute",)),
    "critique": ("I choose to critique and refine existing work.", ("critique",)),
    "verify": ("I choose to verify a result.", ("verify",)),
    "terminate": ("I choose to terminate and finalize the solution.", ("terminate", "finalize")),
}

INSTRUCTIONS = {
    "strategy": "Propose a high-level strategy: the key concepts, an approach, an outline of 3-5 steps and the "
                "pitfalls to avoid. Do not solve the problem yet.",
    "execute": "Carry out one concrete step of the solution, building on the blackboard, and show your work.",
    "critique": "Critique the existing entries: name the entries (Entry #id), their issues, why they matter, and "
                "how to fix them.",
    "verify": "Verify the latest result on the blackboard independently: re-check or recompute it, name the entry "
              "(Entry #id), and say whether it is correct.",
    "terminate": "Write the complete final solution. Start with 'FINAL:' and end with the final answer in the "
                 "format the problem asks for.",
}


class Params(MethodParams):
    max_num_agents_to_act: int = Field(1, ge=1, le=64, description="agents drawn to act per iteration")
    termination: Literal["consensus", "iteration"] = Field(
        "consensus", description="consensus: the board closes when enough different agents have a standing "
        "conclusion (paper); iteration: when enough agents terminate in one iteration (reference)")
    min_num_agents_to_stop: int | None = Field(None, ge=1, le=64, description="agents whose conclusions close the "
                                               "board; default: a majority of the agents (consensus), 1 (iteration)")
    agent_idle_threshold: int = Field(6, ge=1, le=1000, description="an agent idle this many iterations also acts "
                                      "(no effect in the reference)")
    max_iterations: int = Field(10, ge=1, le=200, description="iterations before every agent must conclude")
    max_num_retries: int = Field(3, ge=0, le=20, description="retries of an unrecognised action choice or vote")


@dataclass
class Board:
    """One question's blackboard."""

    problem: str
    entries: list[dict] = field(default_factory=list)
    idle: dict[int, int] = field(default_factory=dict)
    conclusions: list[dict] = field(default_factory=list)
    selections: list[dict] = field(default_factory=list)
    ended_by: str = ""
    iterations: int = 0

    def render(self) -> str:
        if not self.entries:
            return "(empty)"
        out, last = [], None
        for e in self.entries:
            if e["iteration"] != last:
                out.append(f"--- Iteration {e['iteration']} ---")
                last = e["iteration"]
            out.append(f"Entry #{e['id']} ({e['author']}, {e['action']}): {e['text'].strip()}")
        return "\n".join(out)

    def add(self, iteration: int, author: str, action: str, text: str) -> None:
        self.entries.append({"id": len(self.entries) + 1, "iteration": iteration, "author": author,
                             "action": action, "text": text})


def header(agent: ModelHandle, board: Board) -> str:
    return (f"You are agent {agent.name}, one of several agents solving a problem together on a shared "
            "blackboard. Cite entries as 'Entry #id'.\n\n"
            f"Problem:\n{board.problem}\n\nBlackboard:\n{board.render()}")


def select_prompt(agent: ModelHandle, board: Board) -> str:
    options = "\n".join(sentence for sentence, _ in ACTIONS.values())
    return (f"{header(agent, board)}\n\nAnalyse the state of the blackboard critically and choose your next action. "
            f"End your reply with exactly one of these sentences:\n{options}")


def action_prompt(agent: ModelHandle, board: Board, action: str, reasoning: str) -> str:
    return f"{header(agent, board)}\n\nYour analysis:\n{reasoning.strip()}\n\n{INSTRUCTIONS[action]}"


def vote_prompt(problem: str, conclusions: list[str]) -> str:
    shown = "\n\n".join(f"Conclusion #{k}:\n{c.strip()}" for k, c in enumerate(conclusions, 1))
    return (f"Problem:\n{problem}\n\nConclusions proposed by the agents:\n{shown}\n\nReason briefly about which "
            "conclusion is correct, then end with 'Therefore, I vote for Conclusion #k'.")


def parse_action(text: str) -> str | None:
    """The chosen action: the one exact sentence present, else the one action whose keywords appear."""
    exact = {a for a, (sentence, _) in ACTIONS.items() if sentence.lower() in text.lower()}
    if len(exact) == 1:
        return exact.pop()
    if exact:
        return None
    low = text.lower()
    named = {a for a, (_, words) in ACTIONS.items() if any(w in low for w in words)}
    return named.pop() if len(named) == 1 else None


def parse_vote(text: str, n: int) -> int | None:
    """The last 'Conclusion #k' with 1 <= k <= n (the final statement, not a citation earlier in the reasoning)."""
    ks = [int(k) for k in re.findall(r"Conclusion\s*#?\s*(\d+)", text, re.I) if 1 <= int(k) <= n]
    return ks[-1] if ks else None


def conclusion_of(text: str) -> str:
    return text.split("FINAL:", 1)[1].strip() if "FINAL:" in text else text.strip()


@method("text_bbmas", params=Params, level="text", aliases=("bbmas", "blackboard"), min_models=2,
        paper="Blackboard multi-agent system (MoCo method #17, BBMAS)",
        summary="Agents (one per model) take turns on a shared blackboard with five actions; a final vote "
                "among conclusions")
async def run(ctx: RunContext, params: Params) -> list[Output]:
    agents, test = ctx.models, ctx.task.test
    boards = [Board(ex.prompt, idle={a.index: 0 for a in agents}) for ex in test]
    stats: Counter = Counter()
    consensus = params.termination == "consensus"
    need = params.min_num_agents_to_stop or (len(agents) // 2 + 1 if consensus else 1)
    with ctx.phase("test"):
        for it in range(1, params.max_iterations + 1):
            open_ = [j for j, b in enumerate(boards) if not b.ended_by]
            if not open_:
                break
            turns = [(j, a) for j in open_ for a in _acting(ctx.seed, j, it, agents, boards[j], params)]
            chosen = await _choose(ctx, turns, boards, it, params.max_num_retries, stats)
            valid = [(j, a, act, why) for (j, a), (act, why) in zip(turns, chosen) if act is not None]
            outs = await ctx.generate([Call(a, action_prompt(a, boards[j], act, why)) for j, a, act, why in valid],
                                tag=f"iteration {it} act")
            done_this: Counter = Counter()
            for (j, a), (act, why) in zip(turns, chosen):
                boards[j].selections.append({"iteration": it, "agent": a.name, "action": act or "invalid", "reasoning": why})
            for (j, a, act, _), r in zip(valid, outs):
                if not r.failed:
                    boards[j].add(it, a.name, act, r.text)
                    done_this[j] += act == "terminate"
            for j in open_:
                boards[j].iterations = it
                if consensus:
                    _close_on_consensus(boards[j], need)
                    continue
                now = [e for e in boards[j].entries if e["iteration"] == it]
                if done_this[j] >= need and now:
                    final = [e for e in now if "FINAL:" in e["text"]] or now
                    boards[j].conclusions = [{"author": e["author"], "text": conclusion_of(e["text"])} for e in final]
                    boards[j].ended_by = "agents"
        forced = [j for j, b in enumerate(boards) if not b.ended_by]
        if forced:  # the iteration cap: every agent writes a final solution from the blackboard
            outs = await ctx.generate([Call(a, action_prompt(a, boards[j], "terminate", "The iteration limit is reached."))
                                 for j in forced for a in agents], tag="forced conclusion")
            for k, j in enumerate(forced):
                rs = outs[k * len(agents):(k + 1) * len(agents)]
                boards[j].conclusions = [{"author": a.name, "text": conclusion_of(r.text)}
                                         for a, r in zip(agents, rs) if not r.failed and r.text.strip()]
                boards[j].ended_by = "iteration cap"
        votes = await _vote(ctx, boards, params.max_num_retries)
    outputs = []
    for j, b in enumerate(boards):
        winner = _winner(votes.get(j, {}), len(b.conclusions))
        text = b.conclusions[winner - 1]["text"] if b.conclusions else ""
        trace = {"agents": [a.name for a in agents], "entries": b.entries, "selections": b.selections,
                 "iterations": b.iterations, "ended_by": b.ended_by, "conclusions": b.conclusions,
                 "votes": votes.get(j, {}), "winner": winner if b.conclusions else None}
        outputs.append(Output(text, failed=not b.conclusions, trace=trace))
    n = max(1, len(boards))
    ctx.metrics["blackboard"] = {
        "mean_iterations": sum(b.iterations for b in boards) / n,
        "ended_by_cap": sum(b.ended_by == "iteration cap" for b in boards) / n,
        "termination": params.termination, "agents_to_stop": need,
        "actions": dict(Counter(s["action"] for b in boards for s in b.selections)),
        "selection_retries": stats["retries"]}
    return outputs


def _close_on_consensus(board: Board, need: int) -> None:
    """Close the board when `need` different agents have a standing conclusion (each agent's latest terminate
    entry); the conclusions, in board order, then go to every agent's vote."""
    standing = {e["author"]: e for e in board.entries if e["action"] == "terminate"}
    if len(standing) >= need:
        final = sorted(standing.values(), key=lambda e: e["id"])
        board.conclusions = [{"author": e["author"], "text": conclusion_of(e["text"])} for e in final]
        board.ended_by = "consensus"


def _acting(seed: int, j: int, it: int, agents: list[ModelHandle], board: Board, params: Params) -> list[ModelHandle]:
    """Seeded draw of the acting agents, plus every agent idle for `agent_idle_threshold` iterations."""
    rng = random.Random(f"bbmas:{seed}:{j}:{it}")
    drawn = {a.index for a in rng.sample(agents, min(params.max_num_agents_to_act, len(agents)))}
    drawn |= {a.index for a in agents if board.idle[a.index] >= params.agent_idle_threshold}
    for a in agents:
        board.idle[a.index] = 0 if a.index in drawn else board.idle[a.index] + 1
    return [a for a in agents if a.index in drawn]


async def _choose(ctx: RunContext, turns: list[tuple[int, ModelHandle]], boards: list[Board], it: int, retries: int,
            stats: Counter) -> list[tuple[str | None, str]]:
    """(action or None, reasoning) per turn: one batched call, then batched retries for unrecognised choices.
    Every iteration and attempt is a fresh sample (its own replica): a board left unchanged by lost turns would
    otherwise show the agent the very prompt it failed on and replay the cached reply."""
    chosen: list[tuple[str | None, str]] = [(None, "")] * len(turns)
    pending = list(range(len(turns)))
    for attempt in range(retries + 1):
        if not pending:
            break
        stats["retries"] += len(pending) if attempt else 0
        replica = (it - 1) * (retries + 1) + attempt
        rs = await ctx.generate([Call(turns[t][1], select_prompt(turns[t][1], boards[turns[t][0]]), replica=replica)
                           for t in pending], tag=f"iteration {it} select" + (f" retry {attempt}" if attempt else ""))
        for t, r in zip(pending, rs):
            chosen[t] = (None if r.failed else parse_action(r.text), r.text)
        pending = [t for t in pending if chosen[t][0] is None]
    return chosen


async def _vote(ctx: RunContext, boards: list[Board], retries: int) -> dict[int, dict[str, int | None]]:
    """Every agent votes on every question with several conclusions; batched, unparsed votes retried."""
    ballots = [(j, a) for j, b in enumerate(boards) if len(b.conclusions) > 1 for a in ctx.models]
    votes: dict[int, dict[str, int | None]] = {}
    pending = list(range(len(ballots)))
    for attempt in range(retries + 1):
        if not pending:
            break
        rs = await ctx.generate([Call(ballots[t][1], vote_prompt(boards[ballots[t][0]].problem,
                                                           [c["text"] for c in boards[ballots[t][0]].conclusions]),
                                replica=attempt) for t in pending], tag="vote" + (f" retry {attempt}" if attempt else ""))
        for t, r in zip(pending, rs):
            j, a = ballots[t]
            votes.setdefault(j, {})[a.name] = None if r.failed else parse_vote(r.text, len(boards[j].conclusions))
        pending = [t for t in pending if votes[ballots[t][0]][ballots[t][1].name] is None]
    return votes


def _winner(votes: dict[str, int | None], n: int) -> int:
    counts = Counter(v for v in votes.values() if v is not None)
    if not counts:
        return 1
    top = max(counts.values())
    return min(k for k, c in counts.items() if c == top)

"""A real OpenAI-compatible engine (vLLM, SGLang, llama.cpp) through MoCo's OpenAI backend: sequential vs concurrent.

Why: every other test of `moco.models.openai` talks to fake servers, which answer after a fixed sleep and
cost no compute. A real engine batches the requests in flight (continuous batching), so what MoCo's
`endpoint.concurrency` buys depends on the engine and the machine; this measures it, and checks on the way
what the engine honours (per-request seeds, log-probabilities, continuing a partial assistant turn).

Against an already running server (this script starts nothing), it sends the same N chat requests
(sampled, one seed per request) through `OpenAIBackend` twice:
  (a) sequential: one request in flight at a time (`generate` called with one request after the other),
  (b) concurrent: all N handed to one `generate` call, at most `--concurrency` in flight,
and prints requests, tokens out, seconds, tokens/s and the ratio b/a, then the checks. No timing is asserted.

    python benchmarks/real_engine.py --base-url http://127.0.0.1:8001/v1 --model smollm2 [--n 32]
        [--concurrency 8] [--max-new-tokens 64] [--temperature 0.7]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from moco.models.base import GenRequest, GenResult, SamplingParams
from moco.models.openai import OpenAIBackend

TOPICS = ["the sea", "mountains", "a library", "the moon", "bread", "rivers", "winter", "a bicycle", "bees",
          "clocks", "volcanoes", "trains", "coffee", "deserts", "owls", "maps"]


@dataclass
class Leg:
    """One way of sending the requests, and what it cost."""

    name: str
    results: list[GenResult]
    seconds: float

    @property
    def tokens_out(self) -> int:
        return sum(r.tokens_out for r in self.results)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.results)

    def line(self) -> str:
        tps = self.tokens_out / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.name:<26}: {len(self.results):3d} requests, {self.tokens_out:5d} tokens out, "
                f"{self.seconds:7.2f} s = {tps:6.1f} tok/s, {self.failed} failed")


def requests(n: int, max_new_tokens: int, temperature: float) -> list[GenRequest]:
    """N different prompts, each with its own seed (the same requests go to both legs)."""
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.9)
    return [GenRequest(messages=(("user", f"Write two sentences about {TOPICS[i % len(TOPICS)]} (note {i})."),),
                       sampling=sampling, seed=1000 + i) for i in range(n)]


def sequential(backend: OpenAIBackend, reqs: list[GenRequest]) -> Leg:
    t0 = time.perf_counter()
    results = [backend.generate([r])[0] for r in reqs]
    return Leg("(a) sequential, 1 in flight", results, time.perf_counter() - t0)


def concurrent(backend: OpenAIBackend, reqs: list[GenRequest]) -> Leg:
    t0 = time.perf_counter()
    results = backend.generate(reqs)
    return Leg(f"(b) concurrent, {backend.concurrency} in flight", results, time.perf_counter() - t0)


def checks(backend: OpenAIBackend, max_new_tokens: int) -> list[str]:
    """What the engine honours: seeds, log-probabilities, continuation of an assistant prefix."""
    out = []
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95)
    msg = (("user", "Tell me something surprising about octopuses."),)
    a, b, c = backend.generate([GenRequest(msg, sampling, seed=7), GenRequest(msg, sampling, seed=7),
                                GenRequest(msg, sampling, seed=8)])
    out.append(f"seeded: same seed -> same text: {a.text == b.text and not a.failed}; "
               f"other seed -> other text: {a.text != c.text}")
    lp = backend.generate([GenRequest(msg, SamplingParams(max_new_tokens=8, temperature=0.0, logprobs=True))])[0]
    n_lp = len(lp.token_logprobs or [])
    out.append(f"logprobs: {n_lp} per-token log-probabilities for {lp.tokens_out} tokens out"
               + (f" (first {lp.token_logprobs[0]:.3f}, top {lp.top_logprobs[0]:.3f})" if n_lp else "")
               + (f"; error: {lp.error}" if lp.failed else ""))
    prefix = "The answer is"
    cont = backend.generate([GenRequest((("user", "What is 2 + 3? Answer with a number."),),
                                        SamplingParams(max_new_tokens=12, temperature=0.0),
                                        assistant_prefix=prefix)])[0]
    out.append(f"assistant prefix {prefix!r} continued as {cont.text!r}"
               + (f"; error: {cont.error}" if cont.failed else
                  ("; the prefix is repeated (not continued)" if cont.text.strip().startswith(prefix) else "")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8001/v1")
    ap.add_argument("--model", default="smollm2", help="the served model name")
    ap.add_argument("--n", type=int, default=32, help="requests per leg")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    args = ap.parse_args()

    # One backend: a base_url's request slots are process-wide and set by the first backend that reaches it,
    # so the sequential leg sends one request per `generate` call instead of using a second backend.
    backend = OpenAIBackend(args.base_url, args.model, concurrency=args.concurrency, timeout_s=args.timeout,
                            seeded=True)
    served = backend.check()
    ids = [m.get("id") for m in (served.json().get("data") or [])] if served.status_code == 200 else []
    print(f"server {args.base_url}: serves {ids}; model {args.model!r}, {args.n} requests per leg, "
          f"{args.max_new_tokens} new tokens max, temperature {args.temperature}")
    reqs = requests(args.n, args.max_new_tokens, args.temperature)
    backend.generate(reqs[:1])  # warm-up (first request after start-up may compile or allocate)
    seq = sequential(backend, reqs)
    con = concurrent(backend, reqs)
    print(seq.line())
    print(con.line())
    tps_seq = seq.tokens_out / seq.seconds if seq.seconds else 0.0
    tps_con = con.tokens_out / con.seconds if con.seconds else 0.0
    print(f"ratio b/a: wall {seq.seconds / con.seconds:.2f}x faster, tok/s {tps_con / tps_seq:.2f}x"
          if tps_seq and con.seconds else "ratio b/a: n/a")
    same = sum(x.text == y.text for x, y in zip(seq.results, con.results))
    print(f"same text in (a) and (b) (same seeds, different batching): {same}/{len(reqs)}")
    lat = sorted(r.latency_s for r in con.results)
    print(f"(b) per-request latency: median {lat[len(lat) // 2]:.2f} s, max {lat[-1]:.2f} s; "
          f"retries {backend.retries_done}")
    for line in checks(backend, args.max_new_tokens):
        print(line)


if __name__ == "__main__":
    main()

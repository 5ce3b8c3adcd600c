"""An inspect_ai task for `moco serve`: eight arithmetic questions, the answer must contain the number.

Run it against any served collaboration (docs/client-server.md, "Evaluation harnesses"):

    inspect eval examples/harness/inspect_arith.py --model openai-api/moco/<served name> \
        --model-base-url http://127.0.0.1:8000/v1 -M api_key=unused
"""
from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.scorer import includes
from inspect_ai.solver import generate

QUESTIONS = [("What is 17 + 25?", "42"), ("What is 6 * 7?", "42"), ("What is 100 - 1?", "99"),
             ("What is 9 * 9?", "81"), ("What is 12 + 30?", "42"), ("What is 64 / 8?", "8"),
             ("What is 15 - 7?", "8"), ("What is 3 * 11?", "33")]


@task
def arith() -> Task:
    return Task(dataset=[Sample(input=f"{q} Reply with the number.", target=t) for q, t in QUESTIONS],
                solver=generate(), scorer=includes())

"""MentorCollab's branch classifier: an MLP on a generator hidden state that says "keep the generator's segment".

Architecture as in MentorCollab: hidden layers [2h, h, h/2] with batch norm, ReLU and dropout 0.1, then one
logit and a sigmoid. Trained full-batch with binary cross-entropy (label 1 = the generator's segment led to a
better scored answer than the mentor's), seeded. The trained weights are stored under `root/<digest>/` where
the digest covers the training data and settings, so a re-run reuses them.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any


def _mlp(h: int):
    import torch.nn as nn

    dims = [h, 2 * h, h, max(1, h // 2)]
    layers: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(), nn.Dropout(0.1)]
    layers.append(nn.Linear(dims[-1], 1))
    return nn.Sequential(*layers)


class BranchClassifier:
    """P(the generator's segment is the better one | generator hidden state)."""

    def __init__(self, hidden_size: int):
        self.net = _mlp(hidden_size)
        self.net.eval()

    def score(self, hidden) -> float:
        import torch

        with torch.no_grad():
            return float(torch.sigmoid(self.net(hidden.float()[None]))[0, 0])


def train_branch_classifier(features: list, labels: list[float], root: Path, *, epochs: int = 200,
                            learning_rate: float = 1e-3, seed: int = 0,
                            identity: dict[str, Any] | None = None) -> tuple[BranchClassifier, dict[str, Any]]:
    """Train (or reuse) the classifier on (feature vector, label) pairs; returns it and its training log."""
    import torch

    x = torch.stack([f.float() for f in features])
    y = torch.tensor(labels, dtype=torch.float32)
    h = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes())
    h.update(json.dumps({"epochs": epochs, "lr": learning_rate, "seed": seed, "id": identity or {}},
                        sort_keys=True).encode())
    digest = h.hexdigest()[:20]
    out = Path(root) / digest
    clf = BranchClassifier(x.shape[1])
    if (out / "mlp.pt").exists() and (out / "training_log.json").exists():
        clf.net.load_state_dict(torch.load(out / "mlp.pt", weights_only=True))
        clf.net.eval()
        return clf, {**json.loads((out / "training_log.json").read_text()), "reused": True}
    t0 = time.time()
    torch.manual_seed(seed)
    clf = BranchClassifier(x.shape[1])
    net = clf.net
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    xb, yb = (x, y) if len(x) > 1 else (x.repeat(2, 1), y.repeat(2))  # batch norm needs two rows to train
    losses = []
    net.train()
    for _ in range(epochs):
        loss = loss_fn(net(xb)[:, 0], yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    with torch.no_grad():
        acc = float(((torch.sigmoid(net(x)[:, 0]) > 0.5).float() == y).float().mean())
    log = {"digest": digest, "examples": len(labels), "first_loss": losses[0], "last_loss": losses[-1],
           "train_accuracy": acc, "seconds": time.time() - t0, "path": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "mlp.pt")
    (out / "training_log.json").write_text(json.dumps(log))
    return clf, {**log, "reused": False}

"""The shared epoch loop learns, stops early, restores the best weights and reports each epoch."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import cohen_kappa_score
from torch import nn

from dfu_train.training.loop import LoopSettings, fit_epochs
from dfu_train.training.losses import FocalLoss


def _problem(seed=0, n=240):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    y = (x[:, 0] > -0.5).long() + (x[:, 0] > 0.6).long()
    return x, y


def _setup(epochs=30, patience=5, lr=0.05):
    torch.manual_seed(0)
    x, y = _problem()
    xv, yv = _problem(seed=1, n=120)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def batches(epoch):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(x), 32):
            rows = order[start:start + 32]
            yield (x[rows],), y[rows]

    def evaluate(m):
        logits = m(xv)
        qwk = cohen_kappa_score(yv.numpy(), logits.argmax(1).numpy(), weights="quadratic")
        return float(qwk), float(nn.functional.cross_entropy(logits, yv))

    settings = LoopSettings(epochs=epochs, lr=lr, early_stop_patience=patience)
    return model, batches, evaluate, settings


def test_loop_learns_and_reports_every_epoch():
    model, batches, evaluate, settings = _setup()
    epochs = []
    outcome = fit_epochs(model, stage="toy", settings=settings, train_batches=batches,
                         evaluate=evaluate, loss_fn=FocalLoss(gamma=2),
                         on_epoch=lambda e, _: epochs.append(e))
    assert outcome.best_qwk > 0.8
    assert [e["epoch"] for e in epochs] == list(range(outcome.epochs_run))
    assert all(e["trainable_params"] == 4 * 8 + 8 + 8 * 3 + 3 for e in epochs)
    with torch.no_grad():
        assert evaluate(model)[0] == outcome.best_qwk  # best weights restored


def test_no_improvement_stops_early_and_keeps_the_starting_weights():
    model, batches, evaluate, settings = _setup(epochs=40, patience=3, lr=0.0)
    start = [p.clone() for p in model.parameters()]
    outcome = fit_epochs(model, stage="toy", settings=settings, train_batches=batches,
                         evaluate=evaluate, loss_fn=FocalLoss(gamma=0), on_epoch=lambda e, _: None,
                         baseline_qwk=1.0)
    assert outcome.best_epoch == -1 and outcome.epochs_run == 4
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters()))
    assert np.isclose(outcome.best_qwk, 1.0)

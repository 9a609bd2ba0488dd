from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from simapp.learning.optim import FusedAdamW, OneCycle


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))


@pytest.mark.parametrize("schedule", ["onecycle", "constant"])
def test_fused_adamw_and_one_cycle_train_exactly_as_torch_optim(schedule: str) -> None:
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    ours, theirs = _model(), _model()
    optimizer = FusedAdamW(ours.parameters(), lr=1e-2, weight_decay=0.01)
    reference = torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.01, fused=True)
    schedules: list = []
    if schedule == "onecycle":
        schedules = [
            OneCycle(optimizer, max_lr=1e-2, total_steps=37, pct_start=0.1),
            torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=1e-2, total_steps=37, pct_start=0.1),
        ]

    for step in range(37):
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            (model(x[step % 5 * 40 : (step % 5 + 1) * 40]) ** 2).mean().backward()
            opt.step()
        for s in schedules:
            s.step()
        assert optimizer.lr == reference.param_groups[0]["lr"]
        assert optimizer.beta1 == reference.param_groups[0]["betas"][0]

    for mine, expected in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(mine, expected)
    if schedules:
        with pytest.raises(ValueError, match="Tried to step 38 times"):
            schedules[0].step()


def test_training_on_the_cpu_does_not_import_torch_dynamo() -> None:
    # torch.optim imports torch._dynamo (about a second of a `train --wait` process on 2 cores).
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from simapp.learning import GroupData, TrainConfig, train
        x = np.random.default_rng(0).normal(size=(60, 8))
        result = train(TrainConfig(device="cpu", epochs=2, batch_size=12), GroupData(x, np.arange(60) % 3))
        assert result.epochs_run == 2
        print("torch._dynamo" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

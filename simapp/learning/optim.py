"""AdamW and its one-cycle schedule without ``torch.optim``, for training runs that need no loss scaling.

``torch.optim``'s optimizers import ``torch._dynamo`` the first time one is built (and call into it on
every step), which took about 1 s of a ``manage.py train --wait`` process on 2 CPU cores: 7 % of a warm
retrain of CLINC150. :class:`FusedAdamW` makes the same update through the same fused kernel
(``torch._fused_adamw_``, what ``torch.optim.AdamW(fused=True)`` calls) and :class:`OneCycle` computes
the learning rate and ``beta1`` of ``torch.optim.lr_scheduler.OneCycleLR`` with its defaults (cosine
annealing from ``max_lr / 25`` up to ``max_lr`` and down to ``max_lr / 25e4``, ``beta1`` cycling
0.95 -> 0.85 -> 0.95): the trained weights are bit for bit those of the ``torch.optim`` pair (a test
checks it). Float16 training, which needs a gradient scaler, keeps ``torch.optim``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class FusedAdamW:
    """AdamW (decoupled weight decay) over ``params`` with the fused kernel; ``lr`` and ``beta1`` may be
    changed between steps (:class:`OneCycle` does)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.weight_decay = weight_decay
        self.eps = eps
        self._exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self._exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        # Per-parameter step counts, float32 scalars on the parameter's device, as the fused kernel takes.
        self._steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        chosen = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not chosen:
            return
        steps = [self._steps[i] for i in chosen]
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(
            [self.params[i] for i in chosen],
            [self.params[i].grad for i in chosen],
            [self._exp_avgs[i] for i in chosen],
            [self._exp_avg_sqs[i] for i in chosen],
            [],
            steps,
            amsgrad=False,
            lr=self.lr,
            beta1=self.beta1,
            beta2=self.beta2,
            weight_decay=self.weight_decay,
            eps=self.eps,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )


class OneCycle:
    """The one-cycle schedule of ``torch.optim.lr_scheduler.OneCycleLR`` (cosine, two phases, momentum
    cycled through ``beta1``) for a :class:`FusedAdamW`: call :meth:`step` after each optimizer step.
    Building it sets step 0's values, as ``OneCycleLR`` does."""

    def __init__(
        self,
        optimizer: FusedAdamW,
        *,
        max_lr: float,
        total_steps: int,
        pct_start: float,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        initial_lr = max_lr / div_factor
        warm_end = float(pct_start * total_steps) - 1
        # (end step, lr from, lr to, beta1 from, beta1 to)
        self._phases = [
            (warm_end, initial_lr, max_lr, max_momentum, base_momentum),
            (total_steps - 1, max_lr, initial_lr / final_div_factor, base_momentum, max_momentum),
        ]
        self.step_number = -1
        self.step()

    @staticmethod
    def _anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    def step(self) -> None:
        self.step_number += 1
        if self.step_number > self.total_steps:
            raise ValueError(f"Tried to step {self.step_number} times in a schedule of {self.total_steps}")
        start = 0.0
        for i, (end, lr_from, lr_to, beta_from, beta_to) in enumerate(self._phases):
            if self.step_number <= end or i == len(self._phases) - 1:
                pct = (self.step_number - start) / (end - start)
                self.optimizer.lr = self._anneal(lr_from, lr_to, pct)
                self.optimizer.beta1 = self._anneal(beta_from, beta_to, pct)
                return
            start = end

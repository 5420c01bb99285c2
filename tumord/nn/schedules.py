"""Learning-rate schedules: each is a callable mapping the step number (from 0) to a learning rate.

They are small frozen dataclasses rather than closures so that they print their settings in
logs and can be pickled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def _cosine(start: float, end: float, fraction: float) -> float:
    """Cosine interpolation: `start` at fraction 0, `end` at fraction 1."""
    fraction = min(max(fraction, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def _positive(**values) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be positive, got {v}")


@dataclass(frozen=True)
class StepDecay:
    """lr = base_lr * decay_per_epoch ** epoch, the epoch being step // steps_per_epoch.

    With the default steps_per_epoch=1 the callable takes the epoch number itself.
    """

    base_lr: float
    decay_per_epoch: float
    steps_per_epoch: int = 1

    def __post_init__(self):
        _positive(decay_per_epoch=self.decay_per_epoch, steps_per_epoch=self.steps_per_epoch)
        if self.base_lr < 0:  # 0 is allowed: a run that keeps its initial weights
            raise ValueError(f"base_lr must not be negative, got {self.base_lr}")

    def __call__(self, step: int) -> float:
        return self.base_lr * self.decay_per_epoch ** (step // self.steps_per_epoch)


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up to base_lr over warmup_steps (step 0 already gets base_lr / warmup_steps, so
    no step is wasted at lr 0), then a cosine decay reaching min_lr at total_steps and staying there."""

    base_lr: float
    warmup_steps: int
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self):
        _positive(base_lr=self.base_lr)
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps < total_steps, got {self.warmup_steps}, {self.total_steps}")
        if not 0 <= self.min_lr <= self.base_lr:
            raise ValueError(f"need 0 <= min_lr <= base_lr, got {self.min_lr}, {self.base_lr}")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        return _cosine(self.base_lr, self.min_lr, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))


@dataclass(frozen=True)
class OneCycle:
    """The one-cycle policy (Smith), as PyTorch's OneCycleLR with cosine annealing: from
    max_lr / div_factor up to max_lr over the first pct_start of the steps, then down to
    max_lr / div_factor / final_div at the last step (total_steps - 1)."""

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div: float = 1e4

    def __post_init__(self):
        _positive(max_lr=self.max_lr, div_factor=self.div_factor, final_div=self.final_div)
        if self.total_steps < 2:
            raise ValueError(f"total_steps must be at least 2, got {self.total_steps}")
        if not 0 < self.pct_start < 1:
            raise ValueError(f"pct_start must be in (0, 1), got {self.pct_start}")

    @property
    def peak_step(self) -> float:
        return self.pct_start * self.total_steps - 1  # as PyTorch

    def __call__(self, step: int) -> float:
        initial, peak, last = self.max_lr / self.div_factor, self.peak_step, self.total_steps - 1
        if step <= peak:
            return _cosine(initial, self.max_lr, step / peak if peak > 0 else 1.0)
        return _cosine(self.max_lr, initial / self.final_div, (step - peak) / (last - peak) if last > peak else 1.0)


def step_decay(base_lr: float, decay_per_epoch: float, steps_per_epoch: int = 1) -> StepDecay:
    return StepDecay(base_lr, decay_per_epoch, steps_per_epoch)


def warmup_cosine(base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> WarmupCosine:
    return WarmupCosine(base_lr, warmup_steps, total_steps, min_lr)


def one_cycle(max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div: float = 1e4) -> OneCycle:
    return OneCycle(max_lr, total_steps, pct_start, div_factor, final_div)


# by the names train.schedule takes
SCHEDULES = {"step": step_decay, "warmup_cosine": warmup_cosine, "one_cycle": one_cycle}


def make_schedule(name: str, **kwargs):
    if name not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; expected one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)

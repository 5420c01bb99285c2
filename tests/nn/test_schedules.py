"""Learning-rate schedules: values at the start, the peak and the end."""
import math

import pytest

from tumord.nn.schedules import make_schedule, one_cycle, step_decay, warmup_cosine


def test_step_decay_multiplies_by_the_decay_each_epoch():
    s = step_decay(0.1, 0.5)
    assert [s(e) for e in range(3)] == pytest.approx([0.1, 0.05, 0.025])
    per_step = step_decay(0.1, 0.5, steps_per_epoch=10)
    assert per_step(9) == pytest.approx(0.1) and per_step(10) == pytest.approx(0.05)


def test_warmup_cosine_rises_linearly_then_decays_to_min_lr():
    s = warmup_cosine(1e-3, warmup_steps=10, total_steps=110, min_lr=1e-5)
    assert s(0) == pytest.approx(1e-4)  # the first step is not wasted at lr 0
    assert s(4) == pytest.approx(5e-4)
    assert s(9) == pytest.approx(1e-3) and s(10) == pytest.approx(1e-3)  # peak
    assert s(60) == pytest.approx((1e-3 + 1e-5) / 2)  # half-way down the cosine
    assert s(110) == pytest.approx(1e-5) and s(500) == pytest.approx(1e-5)
    assert all(s(i) >= s(i + 1) for i in range(10, 110))


def test_warmup_cosine_without_warmup_starts_at_base_lr():
    assert warmup_cosine(0.1, 0, 100)(0) == pytest.approx(0.1)


def test_one_cycle_matches_pytorch_one_cycle_lr():
    s = one_cycle(0.01, total_steps=100)  # pct_start 0.3: the peak is at step 29, as in PyTorch
    assert s(0) == pytest.approx(0.01 / 25)
    assert s(29) == pytest.approx(0.01)
    assert s(99) == pytest.approx(0.01 / 25 / 1e4)
    assert s(14.5) == pytest.approx((0.01 + 0.01 / 25) / 2)
    assert max(s(i) for i in range(100)) == pytest.approx(0.01)
    assert all(s(i) < s(i + 1) for i in range(29)) and all(s(i) > s(i + 1) for i in range(29, 99))


def test_make_schedule_builds_by_name_and_names_the_unknown_one():
    assert make_schedule("warmup_cosine", base_lr=1.0, warmup_steps=2, total_steps=4)(1) == 1.0
    assert make_schedule("step", base_lr=0.3, decay_per_epoch=0.5, steps_per_epoch=10)(25) == pytest.approx(0.075)
    with pytest.raises(ValueError, match="'cosine_restarts'"):
        make_schedule("cosine_restarts", base_lr=1.0)


@pytest.mark.parametrize(
    "make",
    [lambda: warmup_cosine(0.1, 10, 10), lambda: warmup_cosine(0.1, 0, 10, min_lr=0.2),
     lambda: one_cycle(0.1, 100, pct_start=1.0), lambda: step_decay(0.1, 0.0), lambda: one_cycle(-1.0, 10)],
)
def test_invalid_settings_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_schedules_give_finite_values_on_tiny_runs():
    for s in (one_cycle(0.1, 2), one_cycle(0.1, 3, pct_start=0.9), warmup_cosine(0.1, 1, 2)):
        assert all(math.isfinite(s(i)) and s(i) >= 0 for i in range(3))

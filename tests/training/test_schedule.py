"""vocseg.training.schedule: learning rates at chosen steps (by hand and against torch's schedulers), durations, budgets."""

from __future__ import annotations

import math

import pytest
import torch

from vocseg.config import parse_duration
from vocseg.errors import VocsegError
from vocseg.training.schedule import lr_at, plan_budget


def _torch_lrs(make_scheduler, steps: int, base_lr: float) -> list[float]:
    """The lr torch's scheduler gives each of ``steps`` optimizer steps (stepped after each, as in training)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


# ----------------------------------------------------------------------------- hand-computed values


def test_warmup_rises_linearly_from_near_zero_to_base() -> None:
    kw = {"kind": "poly", "warmup_steps": 100, "min_lr": 1e-4}
    assert lr_at(0, 1000, 0.01, **kw) == pytest.approx(0.01 / 100)  # never 0: no wasted step
    assert lr_at(49, 1000, 0.01, **kw) == pytest.approx(0.005)
    assert lr_at(99, 1000, 0.01, **kw) == pytest.approx(0.01)  # end of warmup: base
    assert lr_at(100, 1000, 0.01, **kw) == pytest.approx(0.01)  # decay starts from base


def test_poly_after_warmup_by_hand() -> None:
    kw = {"kind": "poly", "warmup_steps": 1000, "min_lr": 1e-4, "power": 0.9}
    # T = 19000 decay steps; middle: t = 9500 -> (1 - 0.5) ** 0.9
    assert lr_at(10_500, 20_000, 0.01, **kw) == pytest.approx(1e-4 + (0.01 - 1e-4) * 0.5**0.9)
    assert lr_at(19_999, 20_000, 0.01, **kw) == pytest.approx(1e-4 + (0.01 - 1e-4) * (1 / 19000) ** 0.9)
    assert lr_at(20_000, 20_000, 0.01, **kw) == pytest.approx(1e-4)  # end, and beyond it, the floor
    assert lr_at(25_000, 20_000, 0.01, **kw) == pytest.approx(1e-4)


def test_cosine_after_warmup_by_hand() -> None:
    kw = {"kind": "cosine", "warmup_steps": 10, "min_lr": 1e-5}
    assert lr_at(10, 110, 1e-3, **kw) == pytest.approx(1e-3)
    assert lr_at(60, 110, 1e-3, **kw) == pytest.approx((1e-3 + 1e-5) / 2)  # middle: halfway between
    assert lr_at(35, 110, 1e-3, **kw) == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(110, 110, 1e-3, **kw) == pytest.approx(1e-5)


def test_a_run_shorter_than_its_warmup_still_has_a_defined_lr() -> None:
    # A budget re-planned short can end the run inside the warmup: the ramp continues, no error mid-run.
    assert lr_at(3, 4, 0.1, kind="poly", warmup_steps=10, min_lr=0.01) == pytest.approx(0.04)
    assert lr_at(12, 10, 0.1, kind="cosine", warmup_steps=10, min_lr=0.01) == pytest.approx(0.01)


def test_none_is_constant_after_warmup() -> None:
    assert [lr_at(s, 10, 0.1, kind="none", warmup_steps=4) for s in range(6)] == pytest.approx(
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    )
    assert lr_at(0, 10, 0.1, kind="none") == 0.1


# ----------------------------------------------------------------------------- torch's schedulers


def test_cosine_matches_cosine_annealing_lr() -> None:
    total, base, floor = 50, 0.1, 0.001
    ours = [lr_at(s, total, base, kind="cosine", min_lr=floor) for s in range(total)]
    theirs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=floor), total, base
    )
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_poly_matches_polynomial_lr_without_a_floor() -> None:
    total, base = 40, 0.01
    ours = [lr_at(s, total, base, kind="poly", power=0.9) for s in range(total + 5)]
    theirs = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=total, power=0.9), total + 5, base
    )
    assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-12)


def test_warmup_then_cosine_matches_torchvisions_sequential_recipe() -> None:
    total, warmup, base = 60, 8, 0.02

    def sequential(o: torch.optim.Optimizer):
        warm = torch.optim.lr_scheduler.LinearLR(o, start_factor=1 / warmup, total_iters=warmup - 1)
        main = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warmup)
        return torch.optim.lr_scheduler.SequentialLR(o, [warm, main], milestones=[warmup])

    ours = [lr_at(s, total, base, kind="cosine", warmup_steps=warmup) for s in range(total)]
    assert ours == pytest.approx(_torch_lrs(sequential, total, base), rel=1e-9, abs=1e-12)


def test_bad_schedules_are_errors_naming_the_values() -> None:
    with pytest.raises(VocsegError, match="'step'"):
        lr_at(0, 10, 0.1, kind="step")
    with pytest.raises(VocsegError, match="step=-1"):
        lr_at(-1, 10, 0.1, kind="cosine")


# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("900", 900),
        (900, 900),
        (90.5, 90.5),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h 30m 10s", 5410),
        ("1.5h", 5400),
        (" 15M ", 900),
        ("2m30s", 150),
    ],
)
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15x", "1h30", "30m1h", "m", "1h1h", "-5", "abc", "1e3", "15 min", True])
def test_parse_duration_errors_name_the_value(text) -> None:
    with pytest.raises(VocsegError) as e:
        parse_duration(text)
    assert repr(text) in str(e.value)


@pytest.mark.parametrize("text", ["0", "0s", 0, -3.0, float("nan")])
def test_parse_duration_must_be_positive(text) -> None:
    with pytest.raises(VocsegError, match="more than 0"):
        parse_duration(text)


# ----------------------------------------------------------------------------- budgets


def _run_seconds(
    total: int, sps: float, eval_s: float, every: int | None, final_s: float, elapsed: float, done: int
) -> float:
    """What the run would really take: the floor(N / every) validations it makes."""
    evals = total // every if every else 0
    return elapsed + (total - done) * sps + evals * eval_s + final_s


def test_budget_without_evaluation_is_budget_over_step_time() -> None:
    assert plan_budget(100.0, 0.5, 0.0, margin=0.0) == 200
    assert plan_budget(100.0, 0.5, 0.0, margin=0.1) == 180


def test_budget_reserves_validations_final_evaluation_and_time_spent() -> None:
    # 15 min; 20 s spent on setup and 30 measuring steps; 0.25 s/step; a 12 s validation every 500 steps;
    # a 40 s final evaluation; 5% of the 880 s left kept back: 30 + (836 - 40) / (0.25 + 12 / 500) = 30 + 2905.1
    kw = {"eval_every": 500, "final_eval_seconds": 40.0, "elapsed_s": 20.0, "steps_done": 30}
    total = plan_budget(900.0, 0.25, 12.0, **kw)
    assert total == 2935
    spent = _run_seconds(total, 0.25, 12.0, 500, 40.0, 20.0, 30)
    assert spent <= 20 + 880 * 0.95 and spent > 20 + 880 * 0.95 - 0.25 - 12.0  # inside the budget, nearly filling it


def test_the_margin_is_a_share_of_the_time_left_so_late_replans_spend_the_budget() -> None:
    # 850 s of 900 spent, a 20 s final evaluation, 0.25 s/step: (50 * 0.95 - 20) / 0.25 = 110 more steps. A
    # margin of the whole budget (45 s) would stop here with 30 s unspent.
    kw = {"final_eval_seconds": 20.0, "steps_done": 3000, "replan": True}
    assert plan_budget(900.0, 0.25, 0.0, elapsed_s=850.0, **kw) == 3110
    assert _run_seconds(3110, 0.25, 0.0, None, 20.0, 850.0, 3000) == pytest.approx(897.5)


@pytest.mark.parametrize(
    "sps, eval_s, every, final_s", [(0.01, 5.0, 100, 3.0), (1.3, 60.0, 50, 120.0), (0.2, 0.0, None, 0.0)]
)
def test_budget_plans_always_end_within_the_budget(sps, eval_s, every, final_s) -> None:
    for budget in (600.0, 3600.0, 7200.0):
        total = plan_budget(
            budget, sps, eval_s, eval_every=every, final_eval_seconds=final_s, elapsed_s=15.0, steps_done=10
        )
        assert _run_seconds(total, sps, eval_s, every, final_s, 15.0, 10) <= budget


def test_budget_is_capped_by_max_steps() -> None:
    assert plan_budget(3600.0, 0.125, 0.0) == 27_360  # 3600 * 0.95 / 0.125
    assert plan_budget(3600.0, 0.125, 0.0, max_steps=30_000) == 27_360
    assert plan_budget(3600.0, 0.125, 0.0, max_steps=20_000) == 20_000


def test_a_replan_with_the_budget_used_up_stops_now_instead_of_failing() -> None:
    kw = {"eval_every": 100, "final_eval_seconds": 30.0, "steps_done": 400, "replan": True}
    assert plan_budget(600.0, 1.0, 20.0, elapsed_s=590.0, **kw) == 400  # over budget: stop at once
    assert plan_budget(600.0, 1.0, 20.0, elapsed_s=100.0, **kw) > 400  # time left: carry on
    with pytest.raises(VocsegError, match="fits only"):  # the same numbers on a first plan are an error
        plan_budget(600.0, 1.0, 20.0, elapsed_s=590.0, **{**kw, "replan": False})


def test_a_budget_too_small_is_an_error_naming_the_numbers() -> None:
    with pytest.raises(VocsegError, match="fits only") as e:
        plan_budget(60.0, 0.5, 10.0, eval_every=10, final_eval_seconds=30.0, elapsed_s=28.5, steps_done=5)
    assert "60 s" in str(e.value) and "0.500 s/step" in str(e.value)
    with pytest.raises(VocsegError, match="warmup"):
        plan_budget(100.0, 1.0, 0.0, warmup_steps=500)
    with pytest.raises(VocsegError, match="seconds_per_step=0"):
        plan_budget(100.0, 0.0, 0.0)

"""Learning-rate schedules and time budgets as small pure functions.

``lr_at`` is the whole schedule: a linear warmup, then a constant, cosine or poly decay over the remaining
steps, as mmsegmentation (``LinearLR`` then ``PolyLR``/``CosineAnnealingLR`` with ``begin=warmup``) and
torchvision's reference scripts (``SequentialLR`` of ``LinearLR`` and the main scheduler) do.
:class:`vocseg.training.lr_schedule.LrSchedule` applies it, per epoch or per step; ``plan_budget`` turns a
time budget into a number of steps.
"""

from __future__ import annotations

import math

from ..config import CHOICES
from ..errors import VocsegError


def _check_schedule(step: int, total_steps: int, kind: str, warmup_steps: int, power: float) -> None:
    if kind not in CHOICES["scheduler"]:
        raise VocsegError(f"schedule kind {kind!r} is not one of {', '.join(CHOICES['scheduler'])}")
    if total_steps < 1 or step < 0 or warmup_steps < 0 or power <= 0:
        raise VocsegError(
            f"schedule needs total_steps >= 1, step >= 0, warmup_steps >= 0 and power > 0; got total_steps="
            f"{total_steps}, step={step}, warmup_steps={warmup_steps}, power={power}"
        )


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    *,
    kind: str,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    power: float = 0.9,
) -> float:
    """Learning rate of optimizer step ``step`` (0-based) in a run of ``total_steps`` steps.

    Warmup: steps ``0 .. W-1`` rise linearly as ``base_lr * (s + 1) / W`` (never 0, so no step is wasted;
    it is torchvision's ``LinearLR(start_factor=1/W, total_iters=W-1)``), reaching ``base_lr`` at step ``W-1``.
    Then, with ``t = step - W`` over ``T = total_steps - W`` steps:

    * none:   ``base_lr``
    * cosine: ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2``  (``CosineAnnealingLR``'s closed form)
    * poly:   ``min_lr + (base_lr - min_lr) * (1 - t / T) ** power``       (mmsegmentation's ``PolyLR``)

    Steps at or past the end stay at the final value (``min_lr`` for cosine and poly). A warmup as long as the
    run (a time budget re-planned short) is defined too: it ramps as usual, and any step after it is final."""
    _check_schedule(step, total_steps, kind, warmup_steps, power)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "none":
        return base_lr
    decay_steps = total_steps - warmup_steps
    progress = min(step - warmup_steps, decay_steps) / decay_steps if decay_steps > 0 else 1.0
    if kind == "cosine":
        return min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0
    return min_lr + (base_lr - min_lr) * (1.0 - progress) ** power


# ----------------------------------------------------------------------------- time budgets


def plan_budget(
    budget_s: float,
    seconds_per_step: float,
    eval_seconds: float,
    *,
    eval_every: int | None = None,
    final_eval_seconds: float = 0.0,
    elapsed_s: float = 0.0,
    steps_done: int = 0,
    margin: float = 0.05,
    warmup_steps: int = 0,
    max_steps: int | None = None,
    replan: bool = False,
) -> int:
    """Total optimizer steps for a run that must end, final evaluation included, within ``budget_s`` seconds.

    The run measures its own speed first: it trains a few steps, takes ``seconds_per_step`` from the steps
    after the first (which pay for cuDNN autotuning, compilation and worker start-up), and times a
    validation pass or a few validation batches scaled to the whole split for ``eval_seconds``. The budget
    is then spent as::

        (budget_s - elapsed_s) * (1 - margin)  >=  (N - steps_done) * seconds_per_step          (the remaining steps)
                                                  + ((N - steps_done) / eval_every) * eval_seconds  (their validations)
                                                  + final_eval_seconds                         (final test pass)

    where ``elapsed_s`` holds what is spent (setup, the steps done, their validations), and
    ``seconds_per_step`` what a step costs with its share of the per-epoch work (checkpoints, the loader's
    start). ``margin`` keeps a share of the time *left* for what the estimates miss (step-time jitter): the
    run re-plans as it goes, so what the estimates can miss shrinks with what is left, and a margin of the
    whole budget would leave it unspent at the end (5% of 15 minutes: 45 s of steps never run; see
    docs/benchmarks.md, "Where a 15-minute budget goes"). The validation term uses ``N / eval_every``, at
    least the ``floor`` of the passes the run will make, so the result errs on the early side. N is
    capped at ``max_steps`` (a config's ``iters``). ``eval_every=None``: no periodic validation
    (``eval_seconds`` unused); validating once per epoch, pass the steps per epoch.

    First plan (``replan=False``): a budget that cannot fit more steps than ``steps_done`` and
    ``warmup_steps`` is an error naming the numbers, raised before the run wastes its time. Re-planning
    later with better measurements (``replan=True``, e.g. after each timed validation pass), a budget
    already used up returns ``steps_done``: stop now and evaluate, rather than fail mid-run."""
    _check_plan_args(
        budget_s, seconds_per_step, eval_seconds, final_eval_seconds, elapsed_s, margin, eval_every, steps_done
    )
    # The steps already done, and their validation passes, are inside elapsed_s: only the rest is planned.
    available = (budget_s - elapsed_s) * (1.0 - margin) - final_eval_seconds
    per_step = seconds_per_step + (eval_seconds / eval_every if eval_every else 0.0)
    total = steps_done + max(0, math.floor(available / per_step))
    if max_steps is not None:
        total = min(total, max_steps)
    if replan:
        return max(total, steps_done)
    floor = max(steps_done, warmup_steps)
    if total <= floor:
        raise VocsegError(
            f"a budget of {budget_s:.0f} s fits only {total} steps at {seconds_per_step:.3f} s/step "
            f"({elapsed_s:.0f} s already spent, {final_eval_seconds:.0f} s reserved for the final evaluation, "
            f"{eval_seconds:.0f} s per validation pass, {margin:.0%} margin): not more than the {floor} steps "
            f"already done or needed for warmup. Raise the budget or lower warmup_iters."
        )
    return total


def _check_plan_args(
    budget_s: float,
    seconds_per_step: float,
    eval_seconds: float,
    final_eval_seconds: float,
    elapsed_s: float,
    margin: float,
    eval_every: int | None,
    steps_done: int,
) -> None:
    """Reject times and counts ``plan_budget`` cannot plan with, naming every value."""
    if budget_s <= 0 or seconds_per_step <= 0 or eval_seconds < 0 or final_eval_seconds < 0 or elapsed_s < 0:
        raise VocsegError(
            f"plan_budget needs budget_s > 0, seconds_per_step > 0 and non-negative times; got budget_s={budget_s}, "
            f"seconds_per_step={seconds_per_step}, eval_seconds={eval_seconds}, "
            f"final_eval_seconds={final_eval_seconds}, elapsed_s={elapsed_s}"
        )
    if not 0.0 <= margin < 1.0 or (eval_every is not None and eval_every < 1) or steps_done < 0:
        raise VocsegError(
            f"plan_budget needs 0 <= margin < 1, eval_every >= 1 and steps_done >= 0; got "
            f"margin={margin}, eval_every={eval_every}, steps_done={steps_done}"
        )

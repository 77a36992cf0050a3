"""The learning-rate schedule and the time budget while a run trains (the pure functions are in schedule.py).

One mechanism, :class:`LrSchedule`, sets every param group's LR to ``schedule.lr_at(...)``; the config
decides how often:

* per epoch (the paper's: ``scheduler: cosine`` or ``none``, no warmup, no ``iters``, no ``budget``): at
  the start of epoch ``e`` the LR is ``lr_at(e, epochs)``, the value ``CosineAnnealingLR(T_max=epochs)``
  gives (eq. 1). Extending a finished run's ``epochs`` stretches the curve to the new length.
* per optimizer step (``poly``, ``warmup_iters > 0``, ``iters`` or ``budget``): after every step the LR
  is ``lr_at(step, total_steps)``. ``iters`` fixes ``total_steps``; a ``budget`` re-plans it from the
  measured step and validation times so the whole run, final evaluation included, ends within the
  budget (see :func:`vocseg.training.schedule.plan_budget`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..config import Config, parse_duration
from ..evaluation.inference import tta_cost
from ..runtime.distributed import broadcast_int
from .schedule import lr_at, plan_budget

# The clock every budget decision reads (a module attribute so tests can run training on a simulated clock).
clock = time.perf_counter
PROBE_STEPS = 5  # steps timed before a budget's first plan (the first step of each epoch is not timed)
UNBOUNDED_EPOCHS = 1_000_000  # with a budget, time decides how many epochs run


def steps_per_epoch(num_train: int, batch_size: int, world: int) -> int:
    """Optimizer steps one epoch takes (the train loader drops the last partial batch when it can)."""
    per_rank = num_train // world
    return per_rank // batch_size if per_rank > batch_size else max(1, math.ceil(per_rank / batch_size))


class LrSchedule:
    """Sets the LR (per epoch or per step, see the module docstring) and keeps a time budget's books."""

    def __init__(
        self,
        cfg: Config,
        optimizer: torch.optim.Optimizer,
        spe: int,
        num_eval_images: int,
        num_final_images: int | None = None,
        started: float | None = None,
        eval_probe: Callable[[], float] | None = None,
    ) -> None:
        self.cfg, self.optimizer, self.spe = cfg, optimizer, spe
        self.per_step = (
            cfg.scheduler == "poly" or cfg.warmup_iters > 0 or cfg.iters is not None or cfg.budget is not None
        )
        self.budget_s = parse_duration(cfg.budget) if cfg.budget is not None else None
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.step = 0
        self.total_steps = cfg.iters if cfg.iters is not None else cfg.epochs * spe
        self.num_eval_images = num_eval_images
        # The final evaluation: the test split (None: the validation split), with the config's TTA.
        self.num_final_images = num_eval_images if num_final_images is None else num_final_images
        self.started = clock() if started is None else started  # the budget counts from the run's start
        self.eval_probe = eval_probe  # seconds to evaluate one validation image, measured when called
        # Seconds the final evaluation's test-time augmentation adds to one image's plain forward, timed when
        # called (None: not measurable). Small scales cost more than their pixels, so the pixel count alone
        # (tta_cost) would under-reserve a multi-scale final evaluation; and only the forwards multiply, not
        # a pass's per-image loading and metrics (docs/benchmarks.md, "Where a 15-minute budget goes").
        self.tta_probe: Callable[[], float | None] | None = None
        self.tta_extra: float | None = None
        self.tta_measured = False  # the probe ran (once per run: its noise must not compound)
        self.eval_estimate: float | None = None  # a validation pass's seconds, probed before the first one
        self.elapsed_before = 0.0  # seconds spent before a resume
        self.step_seconds: float | None = None
        self.eval_seconds: float | None = None
        self._step_times: list[float] = []  # seconds between consecutive steps within an epoch
        self._last_step_at: float | None = None
        # Per-epoch work outside the timed steps and validation (checkpoints, curves, the loader's start and
        # the untimed first step), measured from one epoch's start to the next: the plan charges it per step.
        self.epoch_overheads: list[float] = []
        # (clock, step, seconds of validation and of the budget's probes: the epoch's time that is not overhead)
        self._epoch_began: tuple[float, int, float] | None = None
        if self.per_step:
            self._set_lr()

    @property
    def epochs(self) -> int:
        if self.budget_s is not None:
            return UNBOUNDED_EPOCHS
        if self.cfg.iters is not None:
            return math.ceil(self.cfg.iters / self.spe)
        return self.cfg.epochs

    def epochs_label(self) -> str:
        """The planned number of epochs for the log: ``~N`` under a budget (the current plan), else N."""
        if self.budget_s is not None:
            return f"~{max(1, math.ceil(self.total_steps / self.spe))}"
        return str(self.epochs)

    @property
    def finished(self) -> bool:
        return self.per_step and self.step >= self.total_steps

    def elapsed(self) -> float:
        return self.elapsed_before + clock() - self.started

    def _set_lr(self, step: int | None = None, total: int | None = None) -> None:
        """Every group's LR at ``step`` of ``total`` (default: the optimizer step of the planned total)."""
        c = self.cfg
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr_at(
                self.step if step is None else step,
                self.total_steps if total is None else total,
                base,
                kind=c.scheduler,
                warmup_steps=c.warmup_iters,
                min_lr=c.min_lr,
                power=c.poly_power,
            )

    def after_step(self) -> bool:
        """Called after every optimizer step; True ends the epoch (the schedule is complete)."""
        if not self.per_step:
            return False
        self.step += 1
        if self.budget_s is not None:
            self._time_step()
        self._set_lr()
        return self.step >= self.total_steps

    def begin_epoch(self, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains: a per-epoch schedule sets its LR here."""
        if not self.per_step:
            self._set_lr(epoch, self.cfg.epochs)
        self._last_step_at = None  # the first step of an epoch also pays for the loader's start: not timed
        now = clock()
        if self._epoch_began is not None and self.step_seconds is not None:
            began, step, accounted = self._epoch_began
            timed = (self.step - step) * self.step_seconds + accounted
            self.epoch_overheads.append(max(0.0, now - began - timed))
        self._epoch_began = (now, self.step, 0.0)

    def epoch_overhead(self) -> float:
        """Median seconds an epoch spends outside its timed steps and validation (0 until measured)."""
        return statistics.median(self.epoch_overheads) if self.epoch_overheads else 0.0

    def _time_step(self) -> None:
        now = clock()
        if self._last_step_at is not None:
            self._step_times.append(now - self._last_step_at)
        self._last_step_at = now
        if self.step_seconds is None and len(self._step_times) >= PROBE_STEPS:
            self.step_seconds = sum(self._step_times) / len(self._step_times)
            self._plan(replan=False)
            # The first plan's probes are neither the next step's time nor the epoch's overhead.
            self._last_step_at = clock()
            self._account(self._last_step_at - now)

    def end_epoch(self, val_seconds: float | None) -> None:
        """After an epoch: average every step timed so far, take the validation pass's measured time (None:
        the epoch had none, so the last measurement stands), and re-plan the budget."""
        if self.budget_s is None or self.step_seconds is None:
            return
        self.step_seconds = sum(self._step_times) / len(self._step_times)
        if val_seconds is not None:
            self.eval_seconds = val_seconds
            self._account(val_seconds)
        began = clock()
        self._plan(replan=True)
        self._account(clock() - began)

    def _account(self, seconds: float) -> None:
        """Time this epoch spent on validation or the budget's probes, not on per-epoch overhead."""
        if self._epoch_began is not None:
            began, step, accounted = self._epoch_began
            self._epoch_began = (began, step, accounted + seconds)

    def _probed_eval_seconds(self) -> float:
        """Before the first validation pass: the pass estimated from a few timed images (probed once)."""
        if self.eval_estimate is None:
            self.eval_estimate = self.num_eval_images * (self.eval_probe() if self.eval_probe else self.step_seconds)
        return self.eval_estimate

    def final_eval_seconds(self, eval_s: float) -> float:
        """The final evaluation: a plain pass over its split (``eval_s``, a validation pass, scaled by the
        image count) plus the forwards its TTA adds, measured once per run (re-measured at every re-plan, a
        ratio's noise compounded: docs/benchmarks.md, "Where a 15-minute budget goes"). Not measurable: the
        TTA's pixel count times the whole pass, which over-reserves its loading and metrics."""
        plain = eval_s * self.num_final_images / max(self.num_eval_images, 1)
        if self.cfg.tta == "none":
            return plain
        if not self.tta_measured:
            self.tta_extra = self.tta_probe() if self.tta_probe else None
            self.tta_measured = True
        if self.tta_extra is None:
            return plain * tta_cost(self.cfg.tta, self.cfg.tta_scales)
        return plain + self.num_final_images * self.tta_extra

    def _plan(self, replan: bool) -> None:
        eval_s = self.eval_seconds if self.eval_seconds is not None else self._probed_eval_seconds()
        planned = plan_budget(
            self.budget_s,
            self.step_seconds + self.epoch_overhead() / self.spe,
            eval_s,
            eval_every=self.spe * self.cfg.val_every,  # validations are val_every epochs apart
            # the final evaluation, and the last epoch's validation and checkpoints: due or not, whole or cut
            # short, it has them, which the per-step shares (N / eval_every passes, N / spe epochs) can miss
            final_eval_seconds=self.final_eval_seconds(eval_s) + eval_s + self.epoch_overhead(),
            elapsed_s=self.elapsed(),
            steps_done=self.step,
            warmup_steps=self.cfg.warmup_iters,
            max_steps=self.cfg.iters,
            replan=replan,
        )
        # Every rank plans at the same steps, from its own clock: all follow rank 0's plan.
        self.total_steps = broadcast_int(planned, self.optimizer.param_groups[0]["params"][0].device)

    def state_dict(self) -> dict[str, Any]:
        """Nothing for per-epoch schedules; the step count, plus the budget's timings when there is one
        (timings differ between runs, so a run without a budget keeps its checkpoints reproducible)."""
        if not self.per_step:
            return {}
        state: dict[str, Any] = {"step": self.step, "total_steps": self.total_steps}
        if self.budget_s is not None:
            state.update(
                elapsed=self.elapsed(),
                step_seconds=self.step_seconds,
                eval_seconds=self.eval_seconds,
                epoch_overheads=list(self.epoch_overheads),
                tta_extra=self.tta_extra,
                tta_measured=self.tta_measured,
                eval_estimate=self.eval_estimate,
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.step = state["step"]
        if self.budget_s is not None:
            self.elapsed_before = state["elapsed"]
            self.started = clock()
            self.step_seconds, self.eval_seconds = state["step_seconds"], state["eval_seconds"]
            self.epoch_overheads = list(state.get("epoch_overheads", []))  # absent in older checkpoints
            # Older checkpoints kept a ratio instead of the seconds: the TTA is measured again.
            self.tta_extra = state.get("tta_extra")
            self.tta_measured = "tta_extra" in state and state.get("tta_measured", False)
            self.eval_estimate = state.get("eval_estimate")
            self.total_steps = state["total_steps"]
        if self.per_step:
            self._set_lr()

    def summary(self) -> dict[str, Any]:
        """What metrics.json records about the schedule (nothing for per-epoch schedules)."""
        if not self.per_step:
            return {}
        out: dict[str, Any] = {"steps": self.step, "planned_steps": self.total_steps}
        if self.budget_s is not None:
            out.update(budget_seconds=self.budget_s, seconds_used=round(self.elapsed(), 2))
        return out


def build_lr_schedule(
    cfg: Config,
    optimizer: torch.optim.Optimizer,
    num_train: int,
    num_val: int,
    num_test: int,
    world: int,
    started: float,
    eval_probe: Callable[[], float] | None = None,
) -> LrSchedule:
    return LrSchedule(
        cfg,
        optimizer,
        steps_per_epoch(num_train, cfg.batch_size, world),
        num_val,
        num_test,
        started=started,
        eval_probe=eval_probe,
    )

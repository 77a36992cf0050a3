"""vocseg.training.lr_schedule: the per-step learning rate and the time budget while a run trains (the pure
functions behind them are tested in test_schedule.py)."""

from __future__ import annotations

import pytest
import torch

import vocseg.evaluation.evaluator as evaluator_mod
import vocseg.evaluation.inference as inference_mod
import vocseg.training.lr_schedule as sr
import vocseg.training.train as train_mod
from vocseg.config import Config
from vocseg.evaluation.inference import tta_cost
from vocseg.training.schedule import lr_at
from vocseg.training.train import train

# Every test gets its own stats cache and leaves torch's global state (threads, RNGs, flags) as it found it.
pytestmark = pytest.mark.usefixtures("vocseg_cache", "torch_global_state")
REAL_AFTER_STEP, REAL_EVALUATE = sr.LrSchedule.after_step, train_mod.evaluate
REAL_PREDICT = inference_mod.predict_logits


def test_poly_schedule_with_warmup_runs_per_step(tiny_voc, tmp_path):
    """12 images, batch 4: 3 steps per epoch. The LR logged at each epoch's start is lr_at(step)."""
    cfg = Config(
        model="fcn",
        data_root=str(tiny_voc),
        out=str(tmp_path / "run"),
        batch_size=4,
        image_size=48,
        num_workers=0,
        amp="none",
        lr=0.01,
        scheduler="poly",
        warmup_iters=2,
        iters=7,
        epochs=99,
    )
    result = train(cfg, progress=False, log=lambda *_: None)
    steps = [0, 3, 6]
    assert [r["lr"] for r in result.history] == pytest.approx(
        [lr_at(s, 7, 0.01, kind="poly", warmup_steps=2, power=0.9) for s in steps]
    )
    assert result.metrics["steps"] == 7 and len(result.history) == 3  # ceil(7 / 3) epochs, the last one cut short


def _simulated_budget_run(
    monkeypatch,
    tiny_voc,
    out,
    budget_s: float,
    tta: str = "none",
    val_every: int = 1,
    save_s: float = 0.0,
    tta_factor: float = 1.0,
):
    """A budgeted run on a simulated clock: each training step costs 1 s, each validation pass 2 s (times
    the test-time augmentation's cost, times ``tta_factor`` with augmentation) and each epoch's checkpoints
    ``save_s``. Returns the result, the simulated seconds, the passes and the log."""
    now, passes = [0.0], []
    real_save = train_mod.save_epoch

    def save_costs(*args, **kwargs):
        now[0] += save_s
        return real_save(*args, **kwargs)

    def tta_seconds(tta_mode: str) -> float:
        return tta_cost(tta_mode) * (tta_factor if tta_mode != "none" else 1.0)

    def forward_costs(model, images, *, tta="none", **kwargs):  # the budget's probes time single images
        now[0] += 0.1 * tta_seconds(tta)
        return REAL_PREDICT(model, images, tta=tta, **kwargs)

    monkeypatch.setattr(train_mod, "save_epoch", save_costs)
    for module in (train_mod, evaluator_mod):  # every caller of predict_logits pays for its forwards
        monkeypatch.setattr(module, "predict_logits", forward_costs)
    monkeypatch.setattr(sr, "clock", lambda: now[0])
    real_after, real_eval = REAL_AFTER_STEP, REAL_EVALUATE  # not an earlier call's wrappers

    def step_costs_1s(self):
        now[0] += 1.0
        return real_after(self)

    def eval_costs_2s(*args, **kwargs):
        now[0] += 2.0 * tta_seconds(kwargs.get("tta", "none"))
        passes.append(now[0])
        return real_eval(*args, **kwargs)

    monkeypatch.setattr(sr.LrSchedule, "after_step", step_costs_1s)
    monkeypatch.setattr(train_mod, "evaluate", eval_costs_2s)
    cfg = Config(
        model="unet",  # the budget's books, not the model, are under test: a slim U-Net keeps the steps cheap
        model_kwargs={"base_channels": 4},
        data_root=str(tiny_voc),
        out=str(out),
        batch_size=4,
        image_size=32,
        num_workers=0,
        amp="none",
        scheduler="cosine",
        warmup_iters=3,
        budget=f"{budget_s:.0f}s",
        tta=tta,
        val_every=val_every,
    )
    lines: list[str] = []
    result = train_mod.train(cfg, progress=False, log=lines.append)
    return result, now[0], passes, lines


@pytest.mark.parametrize("tta, budget_s", [("none", 60.0), ("multiscale", 90.0)])
def test_budget_fits_the_whole_run_on_a_simulated_clock(tta, budget_s, tiny_voc, tmp_path, monkeypatch):
    """The run must plan its steps to end (final evaluation included) within the budget, exactly whatever
    the machine. A final evaluation with test-time augmentation costs 2 s x tta_cost (multiscale: ~35 s),
    which the plan must reserve: planned as a plain pass, the run would overshoot 90 s by half a minute."""
    result, used, _, lines = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "run", budget_s, tta)
    m = result.metrics
    assert used <= budget_s, f"the run took {used} simulated seconds of a {budget_s} s budget"
    assert used >= 0.8 * budget_s, f"the plan left most of the budget unused ({used} s)"
    assert m["steps"] == m["planned_steps"] and m["budget_seconds"] == budget_s and m["tta"] == tta
    assert result.history[-1]["lr"] < 0.3 * 0.001  # the cosine decayed over the planned steps (lr 0.001)
    n = len(result.history)  # the log shows the budget's plan, which ends on the epochs that ran
    assert any(line.startswith(f"epoch {n}/~{n} ") for line in lines), [x for x in lines if x.startswith("epoch")]


def test_budget_spends_the_skipped_validations_on_steps(tiny_voc, tmp_path, monkeypatch):
    """val_every 3: a validation every third epoch and after the last; the plan turns the passes it no longer
    pays for into training steps, and the run still ends within the budget."""
    every, every_used, every_passes, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "a", 60.0)
    third, third_used, third_passes, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "b", 60.0, val_every=3)
    validated = [r["epoch"] for r in third.history if r["val_loss"] is not None]
    n = len(third.history)
    assert validated == sorted({e for e in range(3, n + 1, 3)} | {n}), validated
    assert len(third_passes) == len(validated) + 1  # and the final evaluation
    assert len(every_passes) == len(every.history) + 1
    assert third.metrics["steps"] > every.metrics["steps"], (third.metrics["steps"], every.metrics["steps"])
    assert every_used <= 60.0 and third_used <= 60.0


def test_budget_charges_the_per_epoch_work_to_the_steps(tiny_voc, tmp_path, monkeypatch):
    """Checkpoints cost 2 s an epoch here, outside the timed steps (3 steps of 1 s an epoch). Re-planning
    each epoch catches up on most of it, but planned from the step times alone the run still overshoots
    (120.1 s); charged per step, and once more for the last epoch, it must end within the budget, and the
    margin, a share of the time left, must not leave much of it unspent."""
    result, used, _, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "run", 120.0, save_s=2.0)
    assert used <= 120.0, f"the run took {used} simulated seconds of a 120 s budget"
    assert used >= 0.9 * 120.0, f"the plan left {120.0 - used} s of the budget unused"
    assert result.metrics["steps"] == result.metrics["planned_steps"]


@pytest.mark.parametrize("val_every", [1, 6])
def test_budget_times_test_time_augmentation_instead_of_counting_its_pixels(val_every, tiny_voc, tmp_path, monkeypatch):
    """Multi-scale testing here costs 1.5x what its pixels say (small scales run less efficiently): the
    plan must take the cost it measures, not tta_cost's pixel count, and still end within the budget. With
    val_every 6 the run re-plans three times before its first validation pass: the cost is measured once
    (re-measured at every re-plan, the correction compounded to 1.5^4 and left 12% of the budget unused)."""
    kw = {"tta": "multiscale", "tta_factor": 1.5, "val_every": val_every}
    probes, real_probe = [], train_mod.measured_tta_cost
    monkeypatch.setattr(train_mod, "measured_tta_cost", lambda s: probes.append(s) or real_probe(s))
    _, used, _, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "run", 120.0, **kw)
    assert used <= 120.0, f"the run took {used} simulated seconds of a 120 s budget"
    assert used >= 0.9 * 120.0, f"the plan left {120.0 - used} s of the budget unused"
    assert len(probes) == 1
    monkeypatch.setattr(train_mod, "measured_tta_cost", lambda s: None)  # the pixel count alone overshoots
    _, unmeasured, _, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "unmeasured", 120.0, **kw)
    assert unmeasured > 120.0, unmeasured


def test_a_replan_that_ends_the_run_between_validations_still_validates(tiny_voc, tmp_path, monkeypatch):
    """val_every 5, and the budget's re-plan after epoch 2 finds the time spent (a slowed machine): epoch 2 is
    the last, so it validates, picks best.pt and the final evaluation runs, instead of a run without best.pt."""
    real_end = sr.LrSchedule.end_epoch

    def slowed_at_epoch_2(self, val_seconds):
        real_end(self, val_seconds)
        if self.step == 2 * self.spe:
            self.total_steps = self.step

    monkeypatch.setattr(sr.LrSchedule, "end_epoch", slowed_at_epoch_2)
    result, _, passes, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "run", 120.0, val_every=5)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.history[0]["val_miou"] is None and result.history[1]["val_miou"] is not None
    assert result.metrics["best_epoch"] == 2 and (tmp_path / "run" / "best.pt").is_file()
    assert len(passes) == 2  # epoch 2's validation and the final evaluation


@pytest.mark.parametrize("epochs", [6, 13])
def test_per_epoch_cosine_matches_torch_cosine_annealing(epochs):
    """The paper's schedule (eq. 1) through the one mechanism: the LR each epoch starts with equals
    torch's CosineAnnealingLR(T_max=epochs) stepped once per epoch."""
    cfg = Config(scheduler="cosine", epochs=epochs, lr=0.01, min_lr=1e-4)
    p = torch.nn.Parameter(torch.zeros(1))
    ours = sr.LrSchedule(cfg, torch.optim.Adam([p], lr=cfg.lr), spe=5, num_eval_images=1, started=0.0)
    reference_opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(reference_opt, T_max=epochs, eta_min=cfg.min_lr)
    assert not ours.per_step
    for epoch in range(epochs):
        ours.begin_epoch(epoch)
        assert ours.optimizer.param_groups[0]["lr"] == pytest.approx(reference_opt.param_groups[0]["lr"], rel=1e-12)
        for _ in range(5):
            assert ours.after_step() is False  # per epoch: steps leave the LR alone
        reference_opt.step()
        reference.step()

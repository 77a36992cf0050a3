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
    forward_s: float = 0.5,
    pass_s: float = 0.0,
):
    """A budgeted run on a simulated clock: each training step costs 1 s; each image's forward ``forward_s``
    (times the test-time augmentation's cost, times ``tta_factor`` with augmentation), so a plain pass over
    the 4 validation images 2 s by default; each evaluation pass ``pass_s`` more, which augmentation does not
    multiply (loading and metrics); and each epoch's checkpoints ``save_s``. Returns the result, the
    simulated seconds, the passes and the log."""
    now, passes = [0.0], []
    real_save = train_mod.save_epoch

    def save_costs(*args, **kwargs):
        now[0] += save_s
        return real_save(*args, **kwargs)

    def tta_seconds(tta_mode: str) -> float:
        return tta_cost(tta_mode) * (tta_factor if tta_mode != "none" else 1.0)

    def forward_costs(model, images, *, tta="none", **kwargs):  # passes and the budget's probes alike
        now[0] += forward_s * tta_seconds(tta) * images.shape[0]
        return REAL_PREDICT(model, images, tta=tta, **kwargs)

    monkeypatch.setattr(train_mod, "save_epoch", save_costs)
    for module in (train_mod, evaluator_mod):  # every caller of predict_logits pays for its forwards
        monkeypatch.setattr(module, "predict_logits", forward_costs)
    monkeypatch.setattr(sr, "clock", lambda: now[0])
    real_after, real_eval = REAL_AFTER_STEP, REAL_EVALUATE  # not an earlier call's wrappers

    def step_costs_1s(self):
        now[0] += 1.0
        return real_after(self)

    def eval_costs(*args, **kwargs):
        now[0] += pass_s
        result = real_eval(*args, **kwargs)
        passes.append(now[0])
        return result

    monkeypatch.setattr(sr.LrSchedule, "after_step", step_costs_1s)
    monkeypatch.setattr(train_mod, "evaluate", eval_costs)
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


@pytest.mark.parametrize("val_every, forward_s, pass_s", [(1, 0.5, 0.0), (6, 0.5, 0.0), (1, 0.1, 2.0), (6, 0.1, 2.0)])
def test_budget_times_test_time_augmentation_instead_of_counting_its_pixels(
    val_every, forward_s, pass_s, tiny_voc, tmp_path, monkeypatch
):
    """Multi-scale testing here costs 1.5x what its pixels say (small scales run less efficiently): the
    plan must take the cost it measures, not tta_cost's pixel count, and still end within the budget.

    * val_every 6: the run re-plans three times before its first validation pass; the cost is measured once
      (re-measured at every re-plan, a ratio's correction compounded to 1.5^4, 12% of the budget unused).
    * pass_s 2: most of a pass is loading and metrics, which augmentation does not multiply; reserved as a
      ratio of whole passes, the final evaluation took 26 s of 120 s more than it needed.
    """
    kw = {"tta": "multiscale", "tta_factor": 1.5, "val_every": val_every, "forward_s": forward_s, "pass_s": pass_s}
    probes, real_probe = [], train_mod.measured_tta_seconds
    monkeypatch.setattr(train_mod, "measured_tta_seconds", lambda s: probes.append(s) or real_probe(s))
    _, used, _, _ = _simulated_budget_run(monkeypatch, tiny_voc, tmp_path / "run", 120.0, **kw)
    assert used <= 120.0, f"the run took {used} simulated seconds of a 120 s budget"
    assert used >= 0.9 * 120.0, f"the plan left {120.0 - used} s of the budget unused"
    assert len(probes) == 1
    if pass_s == 0.0:  # all forwards: the pixel count alone under-reserves, and the run overshoots
        monkeypatch.setattr(train_mod, "measured_tta_seconds", lambda s: None)
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


def _budget_schedule(tta: str, probe_seconds: list[float | None]) -> sr.LrSchedule:
    """A 10-minute budget's books with 20 validation and 40 test images, whose TTA probe returns the next of
    ``probe_seconds`` (seconds it adds per image) each time it is called."""
    cfg = Config(budget="10m", warmup_iters=0, tta=tta)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    steps = sr.LrSchedule(cfg, optimizer, spe=10, num_eval_images=20, num_final_images=40, started=0.0)
    steps.tta_probe = lambda: probe_seconds.pop(0)
    return steps


def test_final_evaluation_reserves_a_plain_pass_plus_the_measured_augmentation():
    """A validation pass of 20 images takes 10 s (0.5 s an image, loading and metrics included); the final
    evaluation runs 40 images, and the probe says flips add 0.2 s to each: 20 s + 40 x 0.2 s. Unmeasured,
    the pixel count doubles the whole pass (40 s); without TTA the plain pass alone (20 s)."""
    assert _budget_schedule("flip", [0.2]).final_eval_seconds(10.0) == pytest.approx(28.0)
    assert _budget_schedule("flip", [None]).final_eval_seconds(10.0) == pytest.approx(40.0)
    assert _budget_schedule("none", []).final_eval_seconds(10.0) == pytest.approx(20.0)


def test_a_resumed_budget_keeps_its_measured_augmentation_and_remeasures_an_older_checkpoints():
    """The probe's seconds travel in the checkpoint, so a resumed run does not time the TTA again; a checkpoint
    from before they were kept (a ratio, ``final_eval_ratio``) is measured again on resume."""
    first = _budget_schedule("flip", [0.2])
    first.step_seconds, first.eval_seconds = 1.0, 10.0
    first.final_eval_seconds(10.0)
    resumed = _budget_schedule("flip", [])  # a second probe would fail: the list is empty
    resumed.load_state_dict(first.state_dict())
    assert resumed.final_eval_seconds(10.0) == pytest.approx(28.0)
    older = {k: v for k, v in first.state_dict().items() if k not in ("tta_extra", "tta_measured")}
    remeasured = _budget_schedule("flip", [0.5])
    remeasured.load_state_dict({**older, "final_eval_ratio": 4.0})
    assert remeasured.final_eval_seconds(10.0) == pytest.approx(40.0)  # 20 s + 40 x 0.5 s


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

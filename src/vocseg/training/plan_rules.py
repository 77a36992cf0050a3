"""The rules that map a dataset's fingerprint, the machine and the budget to a training recipe (nnU-Net's
idea for VOC-format data). Pure functions, read top to bottom: each returns its choices with a one-line
reason that names the figure it came from. No search happens here; the only measurements are the step
times ``vocseg plan`` takes before calling :func:`plan_recipe` (docs/planning.md: each rule's evidence).

    fingerprint, machine, budget, step times
      -> checks -> crop -> model -> batch -> scales -> holdout -> validation interval -> optimizer/schedule
      -> loss weights -> photometric -> copy-paste -> test-time augmentation
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import VocsegError

# Candidates, smallest first: the CPU recipe's encoder (configs/strong_cpu.yaml) and the field's (strong.yaml).
SMALL = ("transfer_unet", {"encoder": "resnet18", "aspp": False, "aux": True})
LARGE = ("transfer_unet", {"encoder": "resnet50", "aspp": True, "aux": True})
CROPS = (512, 384, 256, 192, 128, 96)  # multiples of 32 (every model's total stride)
FIELD_CROP = 512  # the field's crop for ~500 px photographs (DeepLab, mmsegmentation's voc12aug)
LONG_SCHEDULE = 10_000  # steps: the shortest schedule the field trains ResNet-50 + ASPP with (mmseg: 20k, 40k)
MIN_STEPS = 2_000  # steps a from-scratch run needs at least; a smaller crop buys them on a slow machine
FLOOR_STEPS = 200  # below this no candidate learns anything: the budget is refused
OVERHEAD_KEEP = 0.9  # a larger crop keeping this share of the smallest's steps costs next to nothing
COLOUR_DEFINES = 0.5  # colour_separability at or above it: colour alone tells the classes apart
HALF_KEEP = 0.8  # half resolution keeping less of the classes' separability than this: train at native scale
SMALL_OBJECT_SHARE = 0.02  # median object below 2% of its image: small objects
ZOOM_VIEW = 0.5  # objects a 2x-zoomed crop must overlap on average (VOC's 512 crops at 2x: about 2)
IMBALANCE = 10.0  # largest / smallest foreground pixel share at or above it: imbalanced
BACKGROUND_HEAVY = 0.6  # background share of labelled pixels at or above it
COPY_PASTE = 0.5  # the probability a crop gets another crop's objects pasted onto it, when the rules paste
AUGMENT_EPOCHS = 100  # a short run seeing each training image this often overfits: augmentation pays (planning.md)
MIN_HOLDOUT_IMAGES = 10  # fewer training images cannot give up a holdout that picks an epoch
TTA_SHARE = 0.15  # test-time views may cost at most this share of the training steps
VAL_SHARE = 0.1  # the holdout's validation passes may cost at most this share of the training steps
MIN_VALIDATIONS = 3  # a run validates at least this often (a cosine run ends near its best; 3 guard it)


@dataclass(frozen=True)
class Machine:
    """What the rules know of the machine: its device and whether ImageNet weights can be loaded."""

    device: str  # "cpu" or "cuda"
    pretrained: frozenset[str] = frozenset()  # encoders whose ImageNet weights are on this machine


@dataclass
class Recipe:
    """The chosen config values, each with the reason written beside it in plan.yaml."""

    values: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    steps: int = 0  # the optimizer steps the budget is estimated to give (the run re-plans them as it goes)

    def set(self, key: str, value: Any, reason: str) -> None:
        self.values[key], self.reasons[key] = value, reason


# Seconds per training step of (model name, encoder, crop, batch) on the device, the loader's batch included;
# measured when first asked (training/planner.py), so only the candidates the rules look at are timed.
StepTime = Callable[[str, str, int, int], float]


def plan_recipe(
    fp: Any, class_names: list[str], machine: Machine, budget_s: float, step_time: StepTime, eval_images: int = 0
) -> Recipe:
    """The recipe for training split fingerprint ``fp`` (a data.fingerprint.Fingerprint) of ``class_names`` on
    ``machine`` within ``budget_s`` seconds, timing steps with ``step_time``; ``eval_images`` (default: a
    quarter of the training split) are scored at the end, test-time augmented or not."""
    r = Recipe()
    check_classes(fp, class_names)
    batch = 16 if machine.device == "cuda" else 8
    crop, steps = choose_crop(fp, batch, budget_s, step_time, r)
    model, large_steps = choose_model(machine, crop, batch, budget_s, step_time, steps, r)
    steps = large_steps or steps
    r.set("batch_size", batch, f"{'a GPU takes the field batch' if batch == 16 else 'on a CPU a step costs about its batch, so smaller batches give more steps'} ({machine.device})")  # fmt: skip
    choose_scales(fp, crop, r)
    choose_holdout(fp, r)
    steps = choose_val_every(fp, crop, batch, steps, r)
    choose_optimizer(model, machine, steps, r)
    choose_class_weighting(fp, steps, r)
    seen = steps * batch / _trained_images(fp, r)
    choose_photometric(fp, steps, seen, r)
    choose_copy_paste(steps, seen, r)
    choose_tta(fp, crop, batch, steps, eval_images or max(1, fp.num_images // 4), r)
    r.steps = steps
    return r


def check_classes(fp: Any, names: list[str]) -> None:
    """A class listed but never labelled in the training split cannot be learned: refuse, naming it."""
    if fp.missing_classes:
        missing = ", ".join(f"{i} ({names[i]})" for i in fp.missing_classes)
        raise VocsegError(
            f"the training split has no labelled pixel of {missing}; label some, or drop the class from the "
            "class list (classes.txt / class_names.txt)"
        )


def _steps(budget_s: float, seconds_per_step: float) -> int:
    # 85% of the budget trains; validation, the final test-time-augmented evaluation and start-up take the rest.
    return int(0.85 * budget_s / seconds_per_step)


def choose_crop(fp: Any, batch: int, budget_s: float, step_time: StepTime, r: Recipe) -> tuple[int, int]:
    """The largest crop up to the images' median long side (the first crop size covering it: 512 for VOC's
    500 px) that still gives MIN_STEPS steps of the small model; else the smallest crop (refused below
    FLOOR_STEPS steps), or a larger one keeping OVERHEAD_KEEP of the smallest's steps."""
    side = fp.long_side["median"]
    cover = min((c for c in CROPS if c >= side), default=CROPS[0])
    best = _largest_crop_keeping(MIN_STEPS, CROPS[-1], cover, batch, budget_s, step_time)
    if best is not None:
        r.set("image_size", best[0], f"largest crop up to the median long side ({side:.0f} px) giving >= {MIN_STEPS} steps ({best[1]})")  # fmt: skip
        return best
    crop = CROPS[-1]
    seconds = step_time(SMALL[0], SMALL[1]["encoder"], crop, batch)
    steps = _steps(budget_s, seconds)
    if steps < FLOOR_STEPS:
        need = math.ceil(FLOOR_STEPS * seconds / 0.85)
        raise VocsegError(
            f"a budget of {budget_s:.0f} s is too small for any candidate: the smallest ({SMALL[1]['encoder']}, "
            f"{crop} px crops, batch {batch}) takes {seconds:.2f} s a step here and needs at least {need} s "
            f"({FLOOR_STEPS} steps and the evaluations); give --budget {math.ceil(need / 60)}m or more"
        )
    reason = f"smallest crop: even it gives only {steps} steps (< {MIN_STEPS}) in the budget"
    # Overhead-bound steps: on a CPU where small steps are dominated by fixed costs (launching kernels, the
    # optimizer's pass over the weights), a 128 px step costs about what a 96 px one does, for 1.8x the pixels.
    larger = _largest_crop_keeping(OVERHEAD_KEEP * steps, crop + 1, cover, batch, budget_s, step_time)
    if larger is not None:
        reason = (f"no crop gives {MIN_STEPS} steps; {larger[0]} px keeps {larger[1]} of the smallest crop's "
                  f"{steps} (>= {OVERHEAD_KEEP:.0%}): steps bound by per-step overhead, not by pixels")  # fmt: skip
        crop, steps = larger
    r.set("image_size", crop, reason)
    return crop, steps


def _largest_crop_keeping(
    min_steps: float, low: int, high: int, batch: int, budget_s: float, step_time: StepTime
) -> tuple[int, int] | None:
    """The largest crop in [low, high] giving ``min_steps`` steps of the small model, and its steps. Crops are
    timed smallest first, and none above the first that misses: on a slow machine the large ones would
    spend the budget being timed."""
    best = None
    for crop in sorted(c for c in CROPS if low <= c <= high):
        steps = _steps(budget_s, step_time(SMALL[0], SMALL[1]["encoder"], crop, batch))
        if steps < min_steps:
            break
        best = crop, steps
    return best


def choose_model(
    machine: Machine, crop: int, batch: int, budget_s: float, step_time: StepTime, small_steps: int, r: Recipe
) -> tuple[tuple[str, dict], int | None]:
    """ResNet-50 + ASPP when it fits a long schedule (LONG_SCHEDULE steps) at this crop, else ResNet-18. Timed
    only where it could: on a CPU, when ResNet-18 itself gets LONG_SCHEDULE steps."""
    could = machine.device == "cuda" or small_steps >= LONG_SCHEDULE
    large_time = step_time(LARGE[0], LARGE[1]["encoder"], crop, batch) if could else None
    large_steps = _steps(budget_s, large_time) if large_time else 0
    if large_steps >= LONG_SCHEDULE:
        name, kwargs, steps, why = *LARGE, large_steps, f"resnet50+ASPP fits {large_steps} steps >= {LONG_SCHEDULE}"
    else:
        shown = f"{large_steps} steps" if large_time else f"fewer than resnet18's {small_steps} (not timed)"
        name, kwargs, steps, why = *SMALL, None, f"resnet50+ASPP would get {shown} (< {LONG_SCHEDULE}); resnet18 gets {small_steps}"  # fmt: skip
    pretrained = kwargs["encoder"] in machine.pretrained
    kwargs = {**kwargs, "pretrained": pretrained}
    r.set("model", name, why)
    r.set("model_kwargs", kwargs, "ImageNet weights found" if pretrained else "no ImageNet weights here: from scratch")
    return (name, kwargs), steps


def choose_scales(fp: Any, crop: int, r: Recipe) -> None:
    """Zoom in to 2x when objects are small or the crop is as large as the images (the field's 0.5-2.0 on VOC);
    do not zoom out below native size when half resolution loses what tells the classes apart."""
    r.set("scale_range", *scale_range_for(fp, crop))


def scale_range_for(fp: Any, crop: int) -> tuple[list[float], str]:
    """choose_scales' range and reason (also what the planner times the loader with at each crop)."""
    side, share = fp.long_side["median"], fp.all_objects.get("share_median")
    small = share is not None and share < SMALL_OBJECT_SHARE
    in_view = _objects_in_view(fp, crop, 2.0)
    zoom = crop >= side or (small and in_view >= ZOOM_VIEW)
    high = 2.0 if zoom else 1.0
    why_high = f"crop {crop} {'>=' if crop >= side else '<'} median long side {side:.0f}"
    if small and crop < side:
        why_high = (f"median object {share:.1%} of its image (< {SMALL_OBJECT_SHARE:.0%}), a 2x crop overlaps "
                    f"~{in_view:.2f} objects ({'>=' if zoom else '<'} {ZOOM_VIEW})")  # fmt: skip
    keep = _half_resolution_keeps(fp)
    fine = keep is not None and keep < HALF_KEEP
    shown = "n/a" if keep is None else f"{keep:.0%}"
    low = 1.0 if fine else 0.5
    why_low = f"half resolution keeps {shown} of the classes' separability (finest_scale {fp.finest_scale})"
    return [low, high], f"{why_low}; up to {high}: {why_high}"


def _objects_in_view(fp: Any, crop: int, scale: float) -> float:
    """Objects a crop of the image rescaled by ``scale`` overlaps on average: objects per image times the
    image share of the crop grown by one object (squares placed at random, both sides as shares of the
    image). Zoomed in on small objects, most small crops would hold only background and teach it alone:
    on small_objects at 15 minutes, 96 px crops zoomed to 2x (~0.2 objects a crop) reached 0.69x the mIoU of
    strong_cpu's 128 px at 0.5-1.0."""
    per_image = (fp.objects_per_image or {}).get("mean") or 0.0
    share = fp.all_objects.get("share_median") or 0.0
    crop_share = min(1.0, crop * crop / (scale * scale * fp.height["median"] * fp.width["median"]))
    return per_image * min(1.0, (math.sqrt(crop_share) + math.sqrt(share)) ** 2)


def _half_resolution_keeps(fp: Any) -> float | None:
    """Separability at half resolution over full resolution (data/fingerprint.py); None where local cues
    separate nothing at full resolution. The ratio, not finest_scale, whose 90% line it often sits near."""
    seps = fp.scale_separability
    if not seps or seps[0] is None or seps[0] < 0.05 or seps[1] is None:
        return None
    return seps[1] / seps[0]


def choose_optimizer(model: tuple[str, dict], machine: Machine, steps: int, r: Recipe) -> None:
    """The field's SGD 0.01 + poly for a pretrained encoder on a long schedule; AdamW 1e-3 + warmup-cosine
    from scratch or on a short one: the peer's rate, chosen over strong_cpu.yaml's 5e-4 leave-one-family-out
    (docs/planning.md)."""
    if model[1]["pretrained"] and steps >= LONG_SCHEDULE:
        why = f"pretrained encoder, {steps} steps: the field's schedule"
        for key, value in (("optimizer", "sgd"), ("lr", 0.01), ("weight_decay", 0.0005), ("scheduler", "poly"),
                           ("min_lr", 0.0001), ("warmup_iters", 1000)):  # fmt: skip
            r.set(key, value, why)
    else:
        why = f"{'from scratch' if not model[1]['pretrained'] else 'pretrained'}, {steps} steps: AdamW converges in fewer"  # fmt: skip
        for key, value in (("optimizer", "adamw"), ("lr", 0.001), ("weight_decay", 0.0001), ("scheduler", "cosine"),
                           ("min_lr", 0.0), ("warmup_iters", min(100, steps // 20))):  # fmt: skip
            r.set(key, value, why)


def choose_class_weighting(fp: Any, steps: int, r: Recipe) -> None:
    """The paper's weights on short runs over imbalanced or background-heavy data (a short run stays biased to
    the frequent classes); none on long schedules, as the field trains."""
    background = fp.class_pixel_share[0] if fp.class_pixel_share else 0.0
    imbalance = fp.imbalance or 1.0
    skewed = imbalance >= IMBALANCE or background >= BACKGROUND_HEAVY
    weighted = skewed and steps < LONG_SCHEDULE
    why = f"imbalance {imbalance:.1f}, background {background:.0%} of labelled pixels, {steps} steps"
    r.set("class_weighting", "paper" if weighted else "none", why)


def choose_photometric(fp: Any, steps: int, seen: float, r: Recipe) -> None:
    r.set("photometric", *photometric_for(fp, steps, seen))


def colour_defines(fp: Any) -> bool:
    """Colour alone tells the classes apart: colour jitter would erase what defines them."""
    return fp.colour_separability is not None and fp.colour_separability >= COLOUR_DEFINES


def photometric_for(fp: Any, steps: int, seen: float) -> tuple[bool, str]:
    """Off where colour defines the classes; on for the field's long schedules; on a short run, on only when
    it sees each training image AUGMENT_EPOCHS times or more: a run that sees each image fewer times is
    still fitting its data, and jitter slows it (at equal steps off scored 1.01-1.09x on four families
    that see each image 20-39 times, 0.97x on one that sees them 242 times; docs/results.md)."""
    sep = fp.colour_separability
    colour = f"colour_separability {'n/a' if sep is None else f'{sep:.2f}'}"
    if colour_defines(fp):
        return False, f"{colour} >= {COLOUR_DEFINES}: colour defines the classes"
    if steps >= LONG_SCHEDULE:
        return True, f"{colour} < {COLOUR_DEFINES}, {steps} steps: the field's long schedule"
    on = seen >= AUGMENT_EPOCHS
    return on, f"{colour} < {COLOUR_DEFINES}; each training image seen ~{seen:.0f} times ({'>=' if on else '<'} {AUGMENT_EPOCHS})"  # fmt: skip


def choose_copy_paste(steps: int, seen: float, r: Recipe) -> None:
    """Copy-paste multiplies the object/context pairs of a short run that sees each image AUGMENT_EPOCHS times
    or more (at equal steps: off scored 0.88x where images are seen 242 times, 0.99-1.08x at 20-39); the
    field trains long without it."""
    paste = copy_paste_for(steps, seen)
    why = "the field's long schedule" if steps >= LONG_SCHEDULE else (
        f"each training image seen ~{seen:.0f} times ({'>=' if paste else '<'} {AUGMENT_EPOCHS})")  # fmt: skip
    r.set("copy_paste", paste, f"{why} in {steps} steps")


def copy_paste_for(steps: int, seen: float) -> float:
    return COPY_PASTE if steps < LONG_SCHEDULE and seen >= AUGMENT_EPOCHS else 0.0


def choose_holdout(fp: Any, r: Recipe) -> None:
    """A holdout of the training split picks the best epoch (10%, 20% of small sets); refused when too small."""
    n = fp.num_images
    if n < MIN_HOLDOUT_IMAGES:
        raise VocsegError(
            f"the training split has {n} images: too few for a holdout that picks the best epoch (at least "
            f"{MIN_HOLDOUT_IMAGES}); add images, or train without planning (--val-holdout 0)"
        )
    share = 0.1 if n >= 100 else 0.2
    r.set("val_holdout", share, f"{n} training images: {max(1, round(n * share))} held out to pick the epoch")
    r.set("monitor", "val_miou", "the holdout's mIoU picks the epoch")


def _trained_images(fp: Any, r: Recipe) -> int:
    """The training images left once the holdout (at least one image) is set aside."""
    return max(1, fp.num_images - max(1, round(fp.num_images * r.values["val_holdout"])))


def _view_steps(fp: Any, crop: int, batch: int) -> float:
    """What evaluating one image at native size costs, in training steps: a forward pass without backward
    costs about a third of a step, per crop x crop x batch pixels."""
    return fp.height["median"] * fp.width["median"] / (crop * crop * batch) / 3


def choose_val_every(fp: Any, crop: int, batch: int, steps: int, r: Recipe) -> int:
    """Validate every N epochs so that the holdout's passes cost at most VAL_SHARE of the training steps (and
    at least MIN_VALIDATIONS times a run); returns the steps left once validation is paid for. Native-size
    validation of large images against small training crops can cost as much as the epoch's training: on
    small_objects at 5 minutes, runs validating every epoch made half the steps their step time allowed."""
    trained = _trained_images(fp, r)
    held, epoch_steps = fp.num_images - trained, max(1, trained // batch)
    share = _view_steps(fp, crop, batch) * held / epoch_steps  # one pass against one epoch's training
    epochs = max(1, steps // epoch_steps)
    every = max(1, min(math.ceil(share / VAL_SHARE - 1e-9), epochs // MIN_VALIDATIONS))
    r.set("val_every", every, f"a pass over the {held} holdout images costs ~{share:.0%} of an epoch's {epoch_steps} "
                              f"steps; every {every}: ~{share / every:.0%} of ~{epochs} epochs (<= {VAL_SHARE:.0%})")  # fmt: skip
    return int(steps / (1 + share / every))


def choose_tta(fp: Any, crop: int, batch: int, steps: int, eval_images: int, r: Recipe) -> None:
    """Multi-scale + flip testing at the scales trained on (by 0.25, at most four around 1.0) when its views
    cost at most TTA_SHARE of the training steps, else flips when they do, else none. A view of an image
    costs about a third of a training step per crop-batch of pixels (a forward pass, no backward). Trained
    at one scale, multi-scale testing would be flips at 1.0: the plan says flips."""
    low, high = r.values["scale_range"]
    scales = [round(low + 0.25 * i, 2) for i in range(int(round((high - low) / 0.25)) + 1)]
    scales = sorted(sorted(scales, key=lambda s: (abs(s - 1.0), s))[:4])
    per_view = _view_steps(fp, crop, batch) * eval_images
    options = [("multiscale", 2 * sum(s * s for s in scales), scales)] if len(scales) > 1 else []
    for kind, views, chosen in options + [("flip", 2.0, None)]:
        share = per_view * views / max(steps, 1)
        if share <= TTA_SHARE:
            r.set("tta", kind, f"its views cost ~{share:.0%} of the {steps} training steps (<= {TTA_SHARE:.0%})")
            r.set("tta_scales", chosen, f"training scales {low}-{high} by 0.25, at most the four nearest 1.0" if chosen else "flips only")  # fmt: skip
            return
    share = per_view * 2 / max(steps, 1)
    r.set("tta", "none", f"even flips would cost ~{share:.0%} of the {steps} training steps (> {TTA_SHARE:.0%})")
    r.set("tta_scales", None, "no test-time augmentation")

"""The cost of transfer_unet's auxiliary head in a training step, by where its loss is computed.

    python benchmarks/bench_aux_head.py [--encoder resnet18] [--size 128] [--batch 8] [--steps 12] [--repeats 3]

strong_cpu.yaml's step (ResNet-18 U-Net, batch 8 of 128 crops, bf16 autocast, channels-last, AdamW,
class-weighted cross-entropy) three ways, interleaved, each on its own model:

* "no aux": the model without the head (``aux=false``);
* "aux, full size": mmsegmentation's way, the aux logits upsampled (bilinear) to the input's size and
  scored on every pixel;
* "aux, on its grid": vocseg's way, the aux logits on layer3's 1/16 grid scored against the labels at the
  cells' centres (``losses.labels_on_grid``, as nnU-Net's deep supervision).

Median ms per step over every repeat (the first two steps of each repeat are warm-up); ratios to "no aux".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vocseg.models import create_model
from vocseg.training.step import training_loss


def full_size(out: dict[str, torch.Tensor], size: torch.Size) -> dict[str, torch.Tensor]:
    """mmsegmentation's aux loss: the aux logits resized to the labels' size first."""
    return {**out, "aux": F.interpolate(out["aux"], size=size, mode="bilinear", align_corners=False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 21, (args.batch, args.size, args.size))
    weight = torch.rand(21) + 0.3
    sides: dict[str, tuple[bool, Callable, int]] = {
        "no aux": (False, lambda out: out, 1),
        "aux, full size": (True, lambda out: full_size(out, y.shape[-2:]), 1),
        "aux, on its grid": (True, lambda out: out, 16),
    }
    models = {}
    for name, (aux, _, _) in sides.items():
        model = create_model("transfer_unet", encoder=args.encoder, pretrained=False, aux=aux)
        model = model.to(memory_format=torch.channels_last).train()
        models[name] = (model, torch.optim.AdamW(model.parameters(), 1e-4))
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (_, prepare, stride) in sides.items():
            model, opt = models[name]
            for step in range(args.steps):
                t = time.perf_counter()
                with torch.autocast("cpu", torch.bfloat16):
                    out = prepare(model(x))
                loss = training_loss(out, y, weight, 0.4, aux_stride=stride)[0]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if step >= 2:
                    times[name].append(time.perf_counter() - t)
    base = statistics.median(times["no aux"])
    print(f"transfer_unet {args.encoder}, batch {args.batch} x {args.size}, bf16, {torch.get_num_threads()} threads")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<18} {med * 1000:7.1f} ms/step  {med / base:5.2f}x no aux")


if __name__ == "__main__":
    main()

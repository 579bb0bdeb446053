"""Fine-tuning throughput: optimiser steps per second of the v2 training step (forward with every GRU
iteration, the full v2 loss set, backward, AdamW) on random data, per model, input size and precision.

    .venv/bin/python benchmarks/bench_train.py --model vit-small --size 616,1064 --batch 4 --precision bf16

Random initialisation (no checkpoint needed); the figure is the median of ``--steps`` timed steps after
``--warmup`` untimed ones. On CUDA the peak allocated memory is printed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from metrocli.model.factory import build_model, resolve_device
from metrocli.train import losses as L
from metrocli.train.loop import FinetuneConfig, TrainNet, _autocast, param_groups


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-small")
    ap.add_argument("--size", default="616,1064")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split(","))
    device = resolve_device(args.device)
    model = build_model(args.model).to(device)
    net = model.net
    net.requires_grad_(True)
    net.encoder.mask_token.requires_grad_(False)
    net.train()
    opt = torch.optim.AdamW(param_groups(net, FinetuneConfig()), eps=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    train_net = TrainNet(net)
    b = args.batch
    image = torch.randn(b, 3, h, w, device=device)
    k = torch.tensor([[1000.0, 0, w / 2], [0, 1000.0, h / 2], [0, 0, 1]], device=device).expand(b, 3, 3)
    normal = torch.nn.functional.normalize(torch.randn(b, 3, h, w, device=device), dim=1)
    sup = L.Supervision(
        target=torch.rand(b, 1, h, w, device=device) * 50 + 1,
        intrinsic=k,
        sem_mask=torch.zeros(b, 1, h, w, dtype=torch.int32, device=device),
        normal=normal,
        pad=torch.zeros(b, 4, dtype=torch.long, device=device),
        scale=torch.ones(b, dtype=torch.float64, device=device),
        data_type=("denselidar",) * b,
        has_planes=(False,) * b,
        deno_weight=torch.ones(b, device=device),
    )
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with _autocast(device, args.precision):
            out = train_net(image)
        terms = L.v2_losses(
            list(out["depth_seq"].float()),
            list(out["confidence_seq"].float()),
            list(out["normal_seq"].float()),
            sup,
        )
        scaler.scale(torch.stack(list(terms.values())).sum()).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    mem = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device.type == "cuda" else ""
    print(
        f"{args.model} {h}x{w} batch {b} {args.precision} on {device}: {step:.3f} s/step, "
        f"{1 / step:.2f} steps/s, {b / step:.2f} images/s{mem}"
    )


if __name__ == "__main__":
    main()

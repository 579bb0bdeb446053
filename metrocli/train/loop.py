"""The fine-tuning loop: AdamW with layer-wise lr decay, warm-up + poly schedule, the v2 losses, validation.

One process, or DDP when launched by ``torchrun`` (``WORLD_SIZE`` > 1: NCCL on GPUs, gloo on CPUs); each rank
draws its own share of every dataset (:class:`~metrocli.train.data.BalancedBatchSampler`). Progress with the
loss terms goes to the ``metrocli.train`` logger (stderr); the result is an official-format checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, DataLoader

from metrocli.errors import MetroUsageError
from metrocli.train import losses as L
from metrocli.train.checkpoint import (
    load_training_state,
    official_state_dict,
    save_official,
    save_training_state,
)
from metrocli.train.cstm import AugmentConfig, CstmMode
from metrocli.train.data import BalancedBatchSampler, CanonicalDataset, FrameRef, collate

log = logging.getLogger("metrocli.train")

TrainPrecision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class FinetuneConfig:
    """What a fine-tuning run needs besides its data (defaults: the official v2 recipe where it has one).

    ``size_hw``: crop/input size (multiples of 28; None = the preset's 616x1064). ``lr`` / ``encoder_lr``:
    peak learning rates of the decoder and of the encoder's last block (official 1e-4 / 1e-5); block i of n
    gets ``encoder_lr · layer_decay^(n-1-i)``, the embeddings ``layer_decay^n``. ``warmup_steps`` (None =
    min(500, steps/10)) linear warm-up from 1e-6 of the peak, then ``(1 - t)^power`` poly decay to
    ``min_lr_ratio`` of the peak. ``grad_clip``: max gradient norm. ``accumulate``: micro-batches per step.
    ``ema_decay``: keep (and output) an exponential moving average of the weights. ``val_every`` /
    ``save_every``: steps between validations / resumable states (0 = only at the end).
    ``canonical_focal_px``: focal of the canonical camera at the training resolution (1000 px at the official
    616x1064; scale it with the resolution when training on downscaled images).
    """

    model: str = "vit-small"
    weights: str | None = None
    steps: int = 1000
    size_hw: tuple[int, int] | None = None
    batch_size: int = 2
    lr: float = 1e-4
    encoder_lr: float = 1e-5
    layer_decay: float = 0.9
    weight_decay: float = 0.01
    encoder_weight_decay: float = 1e-3
    warmup_steps: int | None = None
    power: float = 0.9
    min_lr_ratio: float = 0.01
    grad_clip: float = 5.0
    accumulate: int = 1
    ema_decay: float | None = None
    freeze_encoder: bool = False
    precision: TrainPrecision = "fp32"
    cstm_mode: CstmMode = "label"
    canonical_focal_px: float = 1000.0
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    val_every: int = 0
    save_every: int = 0
    log_every: int = 10
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    cache_frames: bool = False
    val_max_depth_m: float = 80.0
    loss_weights: L.LossWeights = field(default_factory=L.LossWeights)


@dataclass(frozen=True)
class FinetuneResult:
    """``output`` checkpoint; ``steps`` done; ``validation``: (step, metrics) of every validation run."""

    output: Path
    steps: int
    validation: tuple[tuple[int, dict[str, float]], ...]
    last_losses: dict[str, float]


class TrainNet(nn.Module):
    """The ViT network in training mode: returns the per-iteration outputs the losses need."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        encoder: Any = self.net.encoder
        decoder: Any = self.net.decoder
        tokens, grid = encoder(image)
        return decoder(tokens, grid, sequence=True)


def lr_lambda(step: int, total: int, warmup: int, power: float, min_ratio: float) -> float:
    """Multiplier of the peak lr at ``step``: poly decay ``(1 - t)^power`` to ``min_ratio``, linear warm-up
    from 1e-6 over ``warmup`` steps (mmcv's ``poly`` policy with ``warmup='linear'``)."""
    t = min(step / max(total, 1), 1.0)
    factor = (1 - min_ratio) * (1 - t) ** power + min_ratio
    if step < warmup:
        k = (1 - step / warmup) * (1 - 1e-6)
        factor *= 1 - k
    return factor


def param_groups(net: nn.Module, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """AdamW groups: the decoder at ``lr``; encoder blocks with layer-wise decay; no weight decay on biases,
    norms and embeddings/tokens."""
    groups: dict[tuple[str, int, bool], list[nn.Parameter]] = {}
    encoder: Any = net.encoder
    n_blocks = len(encoder.blocks)
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(("_token", "pos_embed"))
        if name.startswith("encoder."):
            rest = name[len("encoder.") :]
            if rest.startswith("blocks."):
                depth = n_blocks - 1 - int(rest.split(".")[1])
            elif rest.startswith("norm."):
                depth = 0
            else:
                depth = n_blocks
            groups.setdefault(("encoder", depth, no_wd), []).append(p)
        else:
            groups.setdefault(("decoder", 0, no_wd), []).append(p)
    out = []
    for (part, depth, no_wd), params in sorted(groups.items()):
        if part == "encoder":
            lr, wd = cfg.encoder_lr * cfg.layer_decay**depth, cfg.encoder_weight_decay
        else:
            lr, wd = cfg.lr, cfg.weight_decay
        out.append({"params": params, "lr": lr, "weight_decay": 0.0 if no_wd else wd})
    return out


def supervision(batch: dict[str, Any]) -> L.Supervision:
    """Loss inputs of a collated batch: sparse depth is 'lidar', dense 'denselidar'; no plane ids."""
    n = batch["target"].shape[0]
    return L.Supervision(
        target=batch["target"],
        intrinsic=batch["intrinsic"],
        sem_mask=batch["sem"],
        normal=batch["normal"],
        pad=batch["pad"],
        scale=batch["scale"],
        data_type=tuple("lidar" if bool(s) else "denselidar" for s in batch["sparse"]),
        has_planes=(False,) * n,
        deno_weight=torch.where(batch["has_normal"], 1.0, 2.0).to(batch["target"].device),
    )


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    net: nn.Module, dataset: CanonicalDataset, device: torch.device, max_depth_m: float
) -> dict[str, float]:
    """Mean AbsRel / delta1 / RMSE (metric depth, ``metro eval``'s metrics) and normal angle errors."""
    from metrocli.evaluation.metrics import depth_metrics, mean_metrics, normal_metrics

    was_training = net.training
    net.eval()
    depth_rows, normal_rows = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        out = net(item["image"][None].to(device))
        scale = float(item["scale"])
        target = item["target"][0].numpy().astype(np.float64)
        gt_m = np.where(target > 0, target / scale, 0.0)
        pred_m = out["depth"][0, 0].float().cpu().numpy().astype(np.float64) / scale
        depth_rows.append(depth_metrics(pred_m, gt_m, max_depth_m=max_depth_m))
        if bool(item["has_normal"]) and "normal" in out:
            gt_n = item["normal"].numpy().transpose(1, 2, 0)
            pred_n = out["normal"][0].float().cpu().numpy().transpose(1, 2, 0)
            normal_rows.append(normal_metrics(pred_n, gt_n, mask=target > 0))
    net.train(was_training)
    metrics = mean_metrics(depth_rows, ("abs_rel", "delta1", "rmse"))
    if normal_rows:
        metrics |= {
            f"normal_{k}": v for k, v in mean_metrics(normal_rows, ("mean_deg", "median_deg")).items()
        }
    return metrics


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size) from torchrun's environment; initialises the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def _autocast(device: torch.device, precision: TrainPrecision) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _batches(loader: DataLoader) -> Iterator[dict[str, Any]]:
    while True:
        yield from loader


def state_path(output: str | os.PathLike[str]) -> Path:
    """Where the resumable training state of ``output`` lives (``my-model.pth`` -> ``my-model.state.pt``)."""
    output = Path(output)
    return output.with_name(output.stem + ".state.pt")


def finetune(
    train_sets: Sequence[Sequence[FrameRef]],
    output: str | os.PathLike[str],
    cfg: FinetuneConfig,
    *,
    val_refs: Sequence[FrameRef] = (),
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``cfg.model`` from ``cfg.weights`` on ``train_sets`` (each an equal share of every batch) and
    write the official-format checkpoint ``output`` (plus a resumable state beside it while running)."""
    from metrocli.model.checkpoint import read_checkpoint
    from metrocli.model.factory import load_model, resolve_device
    from metrocli.model.weights import resolve_weights

    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.accumulate < 1:
        raise MetroUsageError("steps, batch size and accumulation must be positive")
    if not train_sets or any(len(s) == 0 for s in train_sets):
        raise MetroUsageError("every training dataset needs at least one frame")
    rank, local_rank, world = _distributed()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise MetroUsageError("fp16 training needs a CUDA device; use bf16 or fp32")
    torch.manual_seed(cfg.seed + rank)

    model = load_model(cfg.model, cfg.weights, device=device)
    if model.preset.family != "vit":
        raise MetroUsageError("fine-tuning supports the ViT (v2) models, which predict depth and normals")
    size_hw: tuple[int, int] = cfg.size_hw or (
        int(model.preset.input_size[0]),
        int(model.preset.input_size[1]),
    )
    if size_hw[0] % 28 or size_hw[1] % 28:
        raise MetroUsageError(f"input size {size_hw[0]}x{size_hw[1]} must be multiples of 28")
    template = read_checkpoint(resolve_weights(cfg.model, cfg.weights))
    net = model.net
    net.requires_grad_(True)
    encoder: Any = net.encoder
    encoder.mask_token.requires_grad_(False)  # unused outside DINOv2 pre-training
    if cfg.freeze_encoder:
        encoder.requires_grad_(False)
    net.train()

    optimizer = torch.optim.AdamW(param_groups(net, cfg), betas=(0.9, 0.999), eps=1e-6)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(500, cfg.steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, cfg.steps, warmup, cfg.power, cfg.min_lr_ratio)
    )
    ema = None
    if cfg.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")

    start = 0
    history: list[tuple[int, dict[str, float]]] = []
    spath = state_path(output)
    if cfg.resume and spath.is_file():
        state = load_training_state(spath)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        start = int(state["step"])
        log.info("resumed from %s at step %d", spath, start)

    train_net: nn.Module = TrainNet(net)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_net = DistributedDataParallel(
            train_net, device_ids=[device.index] if device.type == "cuda" else None
        )

    datasets = [
        CanonicalDataset(
            refs,
            size_hw,
            mode=cfg.cstm_mode,
            focal_px=cfg.canonical_focal_px,
            augment=cfg.augment,
            seed=cfg.seed + 1000 * k,
            cache=cfg.cache_frames,
        )
        for k, refs in enumerate(train_sets)
    ]
    sampler = BalancedBatchSampler(
        [len(d) for d in datasets], cfg.batch_size, seed=cfg.seed + start, rank=rank, world_size=world
    )
    loader: DataLoader[dict[str, Any]] = DataLoader(
        ConcatDataset(datasets),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0,
    )
    val_set = (
        CanonicalDataset(
            val_refs, size_hw, mode=cfg.cstm_mode, focal_px=cfg.canonical_focal_px, augment=None, cache=True
        )
        if val_refs
        else None
    )
    batches = _batches(loader)
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    rng = np.random.default_rng([cfg.seed, rank, start])
    eval_net = ema.module if ema is not None else net

    def validate(step: int) -> None:
        if val_set is None or rank != 0:
            return
        metrics = evaluate(eval_net, val_set, device, cfg.val_max_depth_m)
        history.append((step, metrics))
        log.info("step %d validation: %s", step, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def save_state(step: int) -> None:
        if rank != 0:
            return
        state = {
            "model": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
        }
        if ema is not None:
            state["ema"] = ema.state_dict()
        save_training_state(spath, state)

    if start == 0:
        validate(0)
    terms_f: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        sums: dict[str, float] = {}
        for micro in range(cfg.accumulate):
            batch = _to(next(batches), device)
            sync = micro == cfg.accumulate - 1 or world == 1
            ctx = contextlib.nullcontext() if sync else train_net.no_sync()  # type: ignore[operator]
            with ctx:
                with _autocast(device, cfg.precision):
                    out = train_net(batch["image"])
                terms = L.v2_losses(
                    list(out["depth_seq"].float()),
                    list(out["confidence_seq"].float()),
                    list(out["normal_seq"].float()),
                    supervision(batch),
                    weights=cfg.loss_weights,
                    generator=gen,
                    rng=rng,
                )
                total = torch.stack(list(terms.values())).sum() / cfg.accumulate
                scaler.scale(total).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / cfg.accumulate
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip
        )
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update_parameters(net)
        terms_f = {"total": sum(sums.values()), **sums}
        done = step + 1
        if on_step is not None:
            on_step(done, terms_f)
        if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
            short = {
                k.removeprefix("decode_").removesuffix("Loss"): v for k, v in sums.items() if "gru_" not in k
            }
            rate = (done - start) / (time.perf_counter() - t0)
            log.info(
                "step %d/%d  loss %.4f  %s  grad %.2f  lr %.2e  %.2f steps/s",
                done,
                cfg.steps,
                terms_f["total"],
                " ".join(f"{k} {v:.4f}" for k, v in short.items()),
                float(grad_norm),
                max(g["lr"] for g in optimizer.param_groups),
                rate,
            )
        if cfg.val_every and done % cfg.val_every == 0 and done != cfg.steps:
            validate(done)
        if cfg.save_every and done % cfg.save_every == 0 and done != cfg.steps:
            save_state(done)
    validate(cfg.steps)
    out_path = Path(output)
    if rank == 0:
        save_official(out_path, official_state_dict(eval_net, template, model.preset.family))
        spath.unlink(missing_ok=True)
        log.info("wrote %s", out_path)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return FinetuneResult(out_path, cfg.steps, tuple(history), terms_f)

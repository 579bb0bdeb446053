"""The v2 training losses against values and gradients of the official training code (metric3d-train)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from metrocli.train import losses as L


@pytest.fixture(scope="module")
def fx(shared_dir: Path) -> dict:
    root = shared_dir / "fixtures" / "metric3d-train"
    if not root.is_dir():
        pytest.skip(f"{root} is not present")
    return {
        "inputs": dict(np.load(root / "inputs.npz")),
        "samples": dict(np.load(root / "samples.npz")),
        "grads": dict(np.load(root / "grads.npz")),
        "stats": dict(np.load(root / "stats.npz")),
        "values": json.loads((root / "values.json").read_text()),
    }


class Case:
    """Fixture inputs as tensors of one dtype; the network outputs are leaves that record gradients."""

    def __init__(self, fx: dict, dtype: torch.dtype) -> None:
        inp, s = fx["inputs"], fx["samples"]
        self.target = torch.from_numpy(inp["target"]).to(dtype)
        self.mask = self.target > 1e-8
        self.intrinsic = torch.from_numpy(inp["intrinsic"])  # float32, as the official pipeline passes it
        self.sem = torch.from_numpy(inp["sem_mask"])
        self.normal = torch.from_numpy(inp["normal"]).to(dtype)
        self.pad = torch.from_numpy(inp["pad"])
        self.scale = torch.from_numpy(inp["scale"])

        def leaves(key: str) -> list[torch.Tensor]:
            return [torch.from_numpy(a).to(dtype).requires_grad_(True) for a in inp[key]]

        self.P, self.C, self.N = (
            leaves("predictions_list"),
            leaves("confidence_list"),
            leaves("normal_out_list"),
        )
        self.draws = L.Draws(
            vnl_groups=torch.from_numpy(np.stack([s["VNLoss__p1"], s["VNLoss__p2"], s["VNLoss__p3"]], 1)),
            hdn_ranges=[
                np.stack([s["HDNRandomLoss__sample_min_d"][b], s["HDNRandomLoss__sample_max_d"][b]], 1)
                for b in range(2)
            ],
            hdsn_crops=s["HDSNRandomLoss__crops_y0y1x0x1"],
            hdsn_sem_ids=[s["HDSNRandomLoss__sem_ids_b0"].tolist(), s["HDSNRandomLoss__sem_ids_b1"].tolist()],
            pwn_points=[torch.from_numpy(s["PWNPlanesLoss_sg72__points_yx_b0"].astype(np.int64))],
        )

    def supervision(self) -> L.Supervision:
        return L.Supervision(
            target=self.target,
            intrinsic=self.intrinsic,
            sem_mask=self.sem,
            normal=self.normal,
            pad=self.pad,
            scale=self.scale,
            data_type=("denselidar", "denselidar_syn"),
            has_planes=(True, False),  # Taskonomy carries plane-instance ids
            deno_weight=torch.tensor([1.0, 2.0]),  # Taskonomy has normal GT, VKITTI is not in norm_dataset
        )


def _entries(c: Case) -> dict[str, Callable[[], torch.Tensor]]:
    """Fixture entry -> the weighted loss as in the official ``losses_dict``, with the recorded draws."""
    d = c.draws
    w = L.sequence_weights(5)
    return {
        "VNLoss": lambda: 1.0 * L.vnl_loss(c.P[-1], c.target, c.mask, c.intrinsic, groups=d.vnl_groups),
        "GRUSequenceLoss": lambda: 0.5 * L.gru_sequence_loss(c.P, c.target, c.mask, c.C),
        "SkyRegularizationLoss": lambda: 0.001 * L.sky_regularization_loss(c.P[-1], c.sem, c.N[-1]),
        "HDNRandomLoss": lambda: 0.5 * L.hdn_random_loss(c.P[-1], c.target, c.mask, ranges=d.hdn_ranges),
        "HDSNRandomLoss": lambda: (
            0.5
            * L.hdsn_random_loss(c.P[-1], c.target, c.mask, c.sem, crops=d.hdsn_crops, sem_ids=d.hdsn_sem_ids)
        ),
        "PWNPlanesLoss": lambda: L.pwn_planes_loss(c.P[-1], c.intrinsic, c.sem, has_planes=(True, False)),
        "PWNPlanesLoss_sg72": lambda: L.pwn_planes_loss(
            c.P[-1], c.intrinsic, c.sem, has_planes=(True, False), sample_groups=72, points=d.pwn_points
        ),
        "NormalBranchLoss": lambda: L.normal_branch_loss(c.N, c.normal, c.mask),
        "DeNoConsistencyLoss": lambda: (
            0.01
            * L.deno_consistency_loss(
                c.P[-1], c.C[-1], c.N[-1], c.intrinsic, c.pad, c.scale, torch.tensor([1.0, 2.0])
            )
        ),
        # the official default data types (stereo, lidar) zero the mask for these samples
        "SilogLoss": lambda: L.silog_loss(c.P[-1], c.target, c.mask & False),
        "SilogLoss_alltypes": lambda: L.silog_loss(c.P[-1], c.target, c.mask),
        "gru_SkyRegularizationLoss": lambda: sum(
            0.001 * w[i] * L.sky_regularization_loss(c.P[i], c.sem, c.N[i]) for i in range(4)
        ),
    }


ENTRIES = [
    "VNLoss",
    "GRUSequenceLoss",
    "SkyRegularizationLoss",
    "HDNRandomLoss",
    "HDSNRandomLoss",
    "PWNPlanesLoss",
    "PWNPlanesLoss_sg72",
    "NormalBranchLoss",
    "DeNoConsistencyLoss",
    "SilogLoss",
    "SilogLoss_alltypes",
    "gru_SkyRegularizationLoss",
]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(("dtype", "key"), [(torch.float64, "value_f64"), (torch.float32, "value_f32")])
def test_loss_equals_official_value(fx: dict, entry: str, dtype: torch.dtype, key: str) -> None:
    value = float(_entries(Case(fx, dtype))[entry]().detach())
    expected = fx["values"]["losses"][entry][key]
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("entry", ENTRIES)
def test_loss_gradient_equals_official(fx: dict, entry: str) -> None:
    c = Case(fx, torch.float64)
    loss = _entries(c)[entry]()
    leaves = {f"predictions_list_{i}": t for i, t in enumerate(c.P)}
    leaves |= {f"confidence_list_{i}": t for i, t in enumerate(c.C)}
    leaves |= {f"normal_out_list_{i}": t for i, t in enumerate(c.N)}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    stored = {k.split("__d_")[1]: v for k, v in fx["grads"].items() if k.startswith(entry + "__d_")}
    for name, grad in zip(leaves, grads, strict=True):
        ours = np.zeros(leaves[name].shape) if grad is None else grad.numpy()
        ref = stored.get(name, np.zeros_like(ours))
        scale = max(float(np.abs(ref).max()), 1e-30)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{entry} d/d {name}")


def test_full_v2_recipe_total_equals_official(fx: dict) -> None:
    c = Case(fx, torch.float64)
    # PWN at the official 5000 groups: no plane of the small fixture qualifies, the official value is 0
    terms = L.v2_losses(
        c.P, c.C, c.N, c.supervision(), draws=L.Draws(**{**c.draws.__dict__, "pwn_points": None})
    )
    assert set(terms) == {
        "decode_VNLoss",
        "decode_GRUSequenceLoss",
        "decode_SkyRegularizationLoss",
        "decode_HDNRandomLoss",
        "decode_HDSNRandomLoss",
        "decode_PWNPlanesLoss",
        "decode_NormalBranchLoss",
        "decode_DeNoConsistencyLoss",
        *(f"gru_{i}_SkyRegularizationLoss" for i in range(4)),
    }
    steps = [0.003586887102, 0.01211609326, 0.01133932436, 0.02429151073]
    for i, expected in enumerate(steps):
        assert float(terms[f"gru_{i}_SkyRegularizationLoss"]) == pytest.approx(expected, rel=1e-8)
    assert float(sum(terms.values())) == pytest.approx(-2.105189879, rel=1e-8)


def test_hdn_range_masks_have_the_official_sizes(fx: dict) -> None:
    c, s = Case(fx, torch.float32), fx["samples"]
    for b in range(2):
        low = torch.tensor(s["HDNRandomLoss__sample_min_d"][b], dtype=torch.float32).view(-1, 1, 1)
        high = torch.tensor(s["HDNRandomLoss__sample_max_d"][b] + 1e-30, dtype=torch.float32).view(-1, 1, 1)
        t = c.target[b]
        counts = ((t >= low) & (t < high) & c.mask[b]).flatten(1).sum(1)
        np.testing.assert_array_equal(counts.numpy(), s["HDNRandomLoss__mask_pixel_counts"][b])


def test_depth_to_normal_equals_official(fx: dict) -> None:
    c, s = Case(fx, torch.float64), fx["samples"]
    inside = L.pad_mask(c.pad, 84, 112)
    normal, valid = L.depth_to_normal(c.P[-1].detach(), c.intrinsic, inside, c.scale)
    np.testing.assert_allclose(normal.numpy(), s["DeNoConsistencyLoss__normal_from_depth"], atol=1e-5)
    assert valid.sum() > 0.8 * valid.numel()


def test_depth_to_normal_of_a_plane_is_its_normal() -> None:
    """A tilted plane n·X = -1 seen by a pinhole camera: every interior normal points along n (to the camera).

    The official normalisation adds 1e-4 under the square root, so the vectors are slightly shorter than 1.
    """
    n = torch.tensor([0.3, -0.5, -0.8], dtype=torch.float64)
    n = n / n.norm()
    k = torch.tensor([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]], dtype=torch.float32)
    v, u = torch.meshgrid(torch.arange(48.0), torch.arange(64.0), indexing="ij")
    rays = torch.stack([(u - 31.5) / 60, (v - 23.5) / 60, torch.ones_like(u)]).double()
    depth = (-1.0 / (n.view(3, 1, 1) * rays).sum(0))[None, None]
    normal, valid = L.depth_to_normal(depth, k[None], torch.ones_like(depth, dtype=torch.bool))
    got = normal[0][:, valid[0, 0]]
    assert torch.all((got.norm(dim=0) - 1).abs() < 1e-3)
    got = got / got.norm(dim=0)
    np.testing.assert_allclose(got.numpy(), n.view(3, 1).expand_as(got).numpy(), atol=1e-6)


def test_sequence_weights_follow_the_official_gamma() -> None:
    assert L.sequence_weights(5) == pytest.approx([0.2059, 0.3056, 0.4537, 0.6736, 1.0], abs=1e-4)
    assert L.sequence_weights(1) == [1.0]


@pytest.mark.parametrize(
    ("entry", "weight"),
    [("VNLoss", 1.0), ("HDNRandomLoss", 0.5), ("HDSNRandomLoss", 0.5), ("PWNPlanesLoss_sg72", 1.0)],
)
def test_own_sampling_has_the_official_distribution(fx: dict, entry: str, weight: float) -> None:
    """Our samplers (seeded generators) against the official code's 200-seed statistics."""
    c = Case(fx, torch.float64)
    pred = c.P[-1].detach()
    n_seeds = 6
    values = []
    for seed in range(n_seeds):
        gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
        if entry == "VNLoss":
            v = L.vnl_loss(pred, c.target, c.mask, c.intrinsic, generator=gen)
        elif entry == "HDNRandomLoss":
            v = L.hdn_random_loss(pred, c.target, c.mask, rng=rng)
        elif entry == "HDSNRandomLoss":
            v = L.hdsn_random_loss(pred, c.target, c.mask, c.sem, rng=rng)
        else:
            v = L.pwn_planes_loss(
                pred, c.intrinsic, c.sem, has_planes=(True, False), sample_groups=72, generator=gen
            )
        values.append(weight * float(v))
    ref = fx["stats"][entry + "__values"]
    assert len(set(values)) > 1  # it really samples
    assert abs(np.mean(values) - ref.mean()) < 4 * ref.std() / np.sqrt(n_seeds)
    assert np.std(values) < 3 * ref.std()


def test_losses_are_zero_without_supervision() -> None:
    pred = torch.full((1, 1, 28, 28), 2.0, requires_grad=True)
    target = -torch.ones((1, 1, 28, 28))
    mask = target > 1e-8
    k = torch.tensor([[[20.0, 0, 14], [0, 20.0, 14], [0, 0, 1]]])
    sem = torch.zeros((1, 1, 28, 28), dtype=torch.int32)
    for value in [
        L.vnl_loss(pred, target, mask, k),
        L.gru_sequence_loss([pred], target, mask, [pred]),
        L.sky_regularization_loss(pred, sem),
        L.silog_loss(pred, target, mask),
        L.hdn_random_loss(pred, target, mask),
        L.normal_branch_loss([torch.cat([pred] * 4, 1)], torch.zeros((1, 3, 28, 28)), mask),
    ]:
        assert float(value) == 0.0
        value.backward()  # connected to the graph: an empty batch does not break the step

"""Match graph of photos, its largest connected part, per-frame scales and pose-graph optimisation.

Poses
    ``pose[k]`` is the 4x4 camera-to-reference transform of frame ``k``: a point ``p`` in frame ``k``'s
    camera frame is ``pose[k] @ p`` in the reference frame (the camera frame of the reference photo).
    An edge ``(i, j, T_ij)`` says ``p_i = T_ij @ p_j``, so ``pose[j] ≈ pose[i] @ T_ij``.

Scales
    An edge also carries ``r_ij``, the depth scale of ``j`` relative to ``i``. Per-frame scales ``s_k``
    (multiply frame ``k``'s depth by ``s_k``) are the weighted least-squares solution of
    ``log s_j - log s_i = log r_ij`` with ``s_ref = 1``.

numpy + Open3D only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("metrocli.geometry.posegraph")


@dataclass(frozen=True)
class Edge:
    """A registered pair: ``p_i = transform @ p_j`` (4x4 rigid, metres after scaling), depth scale ratio
    ``scale = s_j / s_i``, a ``weight`` (e.g. inlier count) and an optional 6x6 ``information`` matrix."""

    i: int
    j: int
    transform: np.ndarray
    scale: float = 1.0
    weight: float = 1.0
    information: np.ndarray | None = None


def connected_components(n: int, edges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the graph on nodes ``0..n-1``, largest first (ties: lowest node first)."""
    from scipy.sparse import coo_matrix, csgraph

    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    comps = [np.flatnonzero(labels == c).tolist() for c in np.unique(labels)]
    comps.sort(key=lambda c: (-len(c), c[0]))
    return comps


def largest_component(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Sorted nodes of the largest connected component (the one holding the lowest node on ties)."""
    return connected_components(n, edges)[0] if n else []


def solve_scales(nodes: Sequence[int], edges: Sequence[Edge], reference: int) -> dict[int, float]:
    """Per-frame depth scales from pairwise ratios, ``s_reference = 1`` (weighted least squares in log).

    Args:
        nodes: the frames to solve for (a connected set holding ``reference``).
        edges: edges among them; ``edge.scale = s_j / s_i``, weighted by ``edge.weight``.
    """
    nodes = list(nodes)
    index = {k: n for n, k in enumerate(nodes)}
    rows, rhs, weights = [], [], []
    for e in edges:
        if e.i in index and e.j in index:
            row = np.zeros(len(nodes))
            row[index[e.j]] += 1.0
            row[index[e.i]] -= 1.0
            rows.append(row)
            rhs.append(np.log(e.scale))
            weights.append(np.sqrt(max(e.weight, 1e-9)))
    anchor = np.zeros(len(nodes))
    anchor[index[reference]] = 1.0
    big = 1e3 * (max(weights) if weights else 1.0)
    a = np.array([*(r * w for r, w in zip(rows, weights, strict=True)), anchor * big])
    b = np.array([*(v * w for v, w in zip(rhs, weights, strict=True)), 0.0])
    log_s, *_ = np.linalg.lstsq(a, b, rcond=None)
    return {k: float(np.exp(log_s[index[k]])) for k in nodes}


def spanning_tree(nodes: Sequence[int], edges: Sequence[Edge], reference: int) -> list[tuple[int, Edge]]:
    """The maximum spanning tree (by ``weight``) of the edges among ``nodes``, grown from ``reference``.

    The one tree behind both the initial poses (:func:`spanning_tree_poses`) and the edges the pose-graph
    optimiser treats as certain (:func:`tree_edges`). Of several edges joining the same two frames only the
    strongest (the first on ties) is considered. Returns ``(node, edge)`` for every node reached, in
    breadth-first order from ``reference`` (which is not listed): ``edge`` joins ``node`` to its parent.
    Nodes the edges do not connect to ``reference`` are not listed (scipy ``minimum_spanning_tree`` of the
    weights turned into positive costs, then ``breadth_first_order``).
    """
    from scipy.sparse import coo_matrix, csgraph

    nodes = list(nodes)
    index = {k: n for n, k in enumerate(nodes)}
    strongest: dict[tuple[int, int], Edge] = {}
    for e in edges:
        if e.i in index and e.j in index and e.i != e.j:
            key = (min(e.i, e.j), max(e.i, e.j))
            if key not in strongest or e.weight > strongest[key].weight:
                strongest[key] = e
    if not strongest:
        return []
    keys = list(strongest)
    weights = np.array([strongest[key].weight for key in keys], dtype=np.float64)
    # positive costs, decreasing in the weight: the minimum-cost tree is the maximum-weight tree
    cost = weights.max() - weights + 1.0
    rows = [index[a] for a, _ in keys]
    cols = [index[b] for _, b in keys]
    tree = csgraph.minimum_spanning_tree(coo_matrix((cost, (rows, cols)), shape=(len(nodes), len(nodes))))
    order, parent = csgraph.breadth_first_order(
        tree, index[reference], directed=False, return_predecessors=True
    )
    out = []
    for m in order[1:]:
        a, b = nodes[int(parent[m])], nodes[int(m)]
        out.append((b, strongest[(min(a, b), max(a, b))]))
    return out


def spanning_tree_poses(nodes: Sequence[int], edges: Sequence[Edge], reference: int) -> dict[int, np.ndarray]:
    """Initial camera-to-reference poses by chaining the edges of :func:`spanning_tree` from ``reference``.

    Raises:
        ValueError: the edges do not connect all ``nodes``.
    """
    poses = {reference: np.eye(4)}
    for node, e in spanning_tree(nodes, edges, reference):
        poses[node] = poses[e.i] @ e.transform if e.j == node else poses[e.j] @ np.linalg.inv(e.transform)
    if len(poses) < len(set(nodes)):
        raise ValueError("the nodes are not connected by the edges")
    return poses


def tree_edges(nodes: Sequence[int], edges: Sequence[Edge], reference: int) -> set[tuple[int, int]]:
    """``(i, j)`` of the edges of the maximum spanning tree used by :func:`spanning_tree_poses`."""
    return {(e.i, e.j) for _, e in spanning_tree(nodes, edges, reference)}


def optimise_poses(
    nodes: Sequence[int],
    edges: Sequence[Edge],
    reference: int,
    initial: dict[int, np.ndarray],
    *,
    max_correspondence_m: float = 0.05,
    edge_prune_threshold: float = 0.25,
) -> tuple[dict[int, np.ndarray], list[tuple[int, int]]]:
    """Open3D global pose-graph optimisation (Levenberg-Marquardt) of camera-to-reference poses.

    Edges of the maximum spanning tree are certain; the others (loop closures) are "uncertain" and
    pruned by the optimiser when inconsistent. Returns the optimised poses (re-anchored so that the
    reference is the identity) and the ``(i, j)`` of the edges that were pruned.
    """
    import open3d as o3d

    reg = o3d.pipelines.registration
    nodes = list(nodes)
    index = {k: n for n, k in enumerate(nodes)}
    tree = tree_edges(nodes, edges, reference)
    graph = reg.PoseGraph()
    for k in nodes:
        graph.nodes.append(reg.PoseGraphNode(np.asarray(initial[k], dtype=np.float64)))
    used: list[Edge] = []
    for e in edges:
        if e.i not in index or e.j not in index:
            continue
        info = e.information if e.information is not None else np.eye(6) * e.weight
        # Open3D: edge (source, target, T) with T mapping source points into the target frame.
        graph.edges.append(
            reg.PoseGraphEdge(
                index[e.j], index[e.i], np.asarray(e.transform), np.asarray(info), (e.i, e.j) not in tree
            )
        )
        used.append(e)
    if len(used) > len(nodes) - 1:  # loops: something to optimise
        option = reg.GlobalOptimizationOption(
            max_correspondence_distance=max_correspondence_m,
            edge_prune_threshold=edge_prune_threshold,
            preference_loop_closure=1.0,
            reference_node=index[reference],
        )
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            reg.global_optimization(
                graph,
                reg.GlobalOptimizationLevenbergMarquardt(),
                reg.GlobalOptimizationConvergenceCriteria(),
                option,
            )
    kept = {(nodes[e.target_node_id], nodes[e.source_node_id]) for e in graph.edges}
    pruned = [(e.i, e.j) for e in used if (e.i, e.j) not in kept]
    ref_inv = np.linalg.inv(np.asarray(graph.nodes[index[reference]].pose))
    poses = {k: ref_inv @ np.asarray(graph.nodes[index[k]].pose) for k in nodes}
    return poses, pruned


# ------------------------------------------------------------------------------------ whole registration


@dataclass(frozen=True)
class MultiviewRegistration:
    """Registration of a set of frames.

    Attributes:
        reference: index of the frame whose camera frame is the world frame (the first frame of the
            largest connected part).
        poses: ``{k: 4x4 camera-to-reference}`` for the registered frames.
        scales: ``{k: s_k}``: multiply frame ``k``'s depth by ``s_k`` before using ``poses[k]``.
        left_out: ``{k: reason}`` for frames that could not be registered.
        pairs: every pair tried (coarse feature registration).
        pruned: ``(i, j)`` edges the pose-graph optimiser rejected as inconsistent.
        scale_reference: ``"first"`` (``s_reference = 1``) or ``"mean"`` (geometric mean of scales = 1).
    """

    reference: int
    poses: dict[int, np.ndarray]
    scales: dict[int, float]
    left_out: dict[int, str]
    pairs: tuple
    pruned: tuple[tuple[int, int], ...]
    scale_reference: str = "first"


def register_frames(
    frames: Sequence,
    *,
    estimate_scale: bool = False,
    scale_reference: str = "first",
    icp: str = "point-to-plane",
    icp_voxel_m: float | None = None,
    min_inliers: int = 15,
    seed: int = 0,
) -> MultiviewRegistration:
    """Register RGB-D frames (:class:`metrocli.geometry.registration.Frame`) in any order.

    1. SIFT features per frame; every pair registered from features lifted to 3D (RANSAC, Umeyama; a
       similarity when ``estimate_scale``).
    2. Match graph of the accepted pairs; its largest connected part is kept, the other frames are left out
       with a reason. The first frame of that part is the reference.
    3. Per-frame depth scales from the pairwise ratios (``estimate_scale``), relative to the reference, or
       normalised to a geometric mean of 1 with ``scale_reference="mean"``.
    4. ICP refinement of every accepted pair on the rescaled dense clouds, then Open3D pose-graph
       optimisation over all of them.

    Raises:
        ReconstructionError: fewer than 2 frames, or no pair of frames overlaps.
    """
    from metrocli.errors import ReconstructionError
    from metrocli.geometry.registration import (
        cloud_pyramid,
        detect_features,
        icp_refine,
        lift_features,
        register_features,
    )

    n = len(frames)
    if n < 2:
        raise ReconstructionError(f"multi-view reconstruction needs at least 2 photos, got {n}")
    feats = [lift_features(detect_features(f.rgb), f) for f in frames]
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            pairs.append(
                register_features(
                    i, j, frames[i], frames[j], feats[i], feats[j],
                    with_scale=estimate_scale, min_inliers=min_inliers, seed=seed,
                )
            )  # fmt: skip
            log.debug("pair %s-%s: %s", frames[i].name, frames[j].name, pairs[-1])
    good = [p for p in pairs if p.ok]
    if not good:
        best = max(pairs, key=lambda p: p.n_inliers)
        raise ReconstructionError(
            f"no two photos overlap enough to register (best pair {frames[best.i].name} / "
            f"{frames[best.j].name}: {best.reason})"
        )
    comp = largest_component(n, [(p.i, p.j) for p in good])
    reference = comp[0]
    left_out = _left_out_reasons(frames, pairs, comp)
    coarse = [Edge(p.i, p.j, p.transform, p.scale, float(p.n_inliers)) for p in good if p.i in comp]
    scales = solve_scales(comp, coarse, reference) if estimate_scale else {k: 1.0 for k in comp}
    if icp_voxel_m is None:
        depths = [np.percentile(d[d > 0], 90) for k in comp if (d := np.nan_to_num(frames[k].depth_m)).any()]
        icp_voxel_m = float(np.clip(max(depths) / 150.0, 0.01, 0.1))
    clouds = {k: cloud_pyramid(frames[k], scale=scales[k], voxel_m=icp_voxel_m) for k in comp}
    edges = []
    for e in coarse:
        init = e.transform.copy()
        init[:3, 3] *= scales[e.i]  # translation was in i's raw depth units
        res = icp_refine(clouds[e.j], clouds[e.i], init, voxel_m=icp_voxel_m, method=icp)  # type: ignore[arg-type]
        moved = np.linalg.norm(res.transform[:3, 3] - init[:3, 3])
        log.debug("ICP %s-%s: fitness %.2f rmse %.4f moved %.3f m", e.i, e.j, res.fitness, res.rmse_m, moved)
        edges.append(Edge(e.i, e.j, res.transform, e.scale, e.weight, res.information))
    initial = spanning_tree_poses(comp, edges, reference)
    poses, pruned = optimise_poses(comp, edges, reference, initial, max_correspondence_m=2.0 * icp_voxel_m)
    if estimate_scale and scale_reference == "mean":
        g = float(np.exp(np.mean([np.log(scales[k]) for k in comp])))
        scales = {k: s / g for k, s in scales.items()}
        for pose in poses.values():
            pose[:3, 3] /= g
    return MultiviewRegistration(
        reference, poses, scales, left_out, tuple(pairs), tuple(pruned),
        scale_reference if estimate_scale else "first",
    )  # fmt: skip


def _left_out_reasons(frames: Sequence, pairs: Sequence, comp: Sequence[int]) -> dict[int, str]:
    comp_set = set(comp)
    out: dict[int, str] = {}
    for k in range(len(frames)):
        if k in comp_set:
            continue
        mine = [p for p in pairs if k in (p.i, p.j)]
        linked = [p for p in mine if p.ok]
        if linked:
            others = sorted({frames[p.j if p.i == k else p.i].name for p in linked})
            out[k] = f"overlaps only with photos outside the main group ({', '.join(others)})"
        else:
            best = max(mine, key=lambda p: (p.n_inliers, p.n_matches))
            other = frames[best.j if best.i == k else best.i].name
            out[k] = f"no overlap with any other photo (best: {other}, {best.reason})"
    return out

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

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

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
        pairs: every pair tried (:class:`metrocli.geometry.registration.PairRegistration`, with its dense
            verification, residual and where its pose came from).
        pruned: ``(i, j)`` accepted pairs left out of the final graph because they disagree with the others.
        scale_reference: ``"first"`` (``s_reference = 1``), ``"mean"`` (geometric mean of scales = 1) or
            ``"median"`` (median of scales = 1: the metric scale of the majority of the photos).
        pose_uncertainty: ``{k: (rotation_deg, translation_m)}``: one-sigma uncertainty of each pose
            (rotation, camera centre) from the whole pose graph and, with model depth, how far the joint
            depth correction moved it (0 for the reference; :func:`_pose_uncertainty`).
        scale_spread: standard deviation of ``log s_k`` over the registered frames (0 with metric depth): the
            spread of the per-photo depth scales, i.e. how far the photos disagree on the metric scale.
        depth_correction: ``{k: coefficients}`` of frame ``k``'s smooth depth correction (model depth only,
            :mod:`metrocli.geometry.depth_correction`; none with metric depth): the depth used with
            ``poses[k]`` is the frame's depth times :meth:`depth_factor`.
    """

    reference: int
    poses: dict[int, np.ndarray]
    scales: dict[int, float]
    left_out: dict[int, str]
    pairs: tuple
    pruned: tuple[tuple[int, int], ...]
    scale_reference: str = "first"
    pose_uncertainty: dict[int, tuple[float, float]] = field(default_factory=dict)
    scale_spread: float = 0.0
    depth_correction: dict[int, np.ndarray] = field(default_factory=dict)

    def correction(self, k: int, shape: tuple[int, ...]) -> np.ndarray:
        """(H, W) float32 depth correction field of frame ``k`` (ones when it has none)."""
        from metrocli.geometry.depth_correction import correction_field

        return correction_field(self.depth_correction.get(k), shape)

    def depth_factor(self, k: int, shape: tuple[int, ...]) -> np.ndarray:
        """(H, W) float32 factor to multiply frame ``k``'s depth by before using ``poses[k]``: its scale
        times its depth correction."""
        return (self.scales[k] * self.correction(k, shape)).astype(np.float32)


def _edge_residual(poses: dict[int, np.ndarray], e: Edge) -> tuple[float, float]:
    """(rotation degrees, translation metres) between an edge and the relative pose of its frames."""
    rel = np.linalg.inv(poses[e.i]) @ poses[e.j]
    d = np.linalg.inv(e.transform) @ rel
    ang = float(np.degrees(np.arccos(np.clip((np.trace(d[:3, :3]) - 1) / 2, -1.0, 1.0))))
    return ang, float(np.linalg.norm(rel[:3, 3] - e.transform[:3, 3]))


def _edge_weight(p, window: int) -> float:
    """Weight of a verified pair in the graph (see :func:`_solve_graph`)."""
    return 100.0 * p.overlap * p.consistency * (2.0 if abs(p.j - p.i) <= window else 1.0)


def _unconfirmed(n: int, accepted: Sequence) -> list:
    """The verified pairs of photos that are not neighbours in capture order (the first and the last photo
    are, closing an orbit), whose pose only geometry supports (fewer than
    :data:`metrocli.geometry.pairs.MIN_SUPPORT` feature matches agree with it) and that are a bridge of the
    graph: removing the pair disconnects its photos, so no cycle checks it. (Neighbours are exempt: a
    room's twin lies a large turn away, where non-neighbours are; without them a plain orbit with model
    depth, a chain of geometry-only neighbours, kept 1 photo of 12.)"""
    from metrocli.geometry.pairs import MIN_SUPPORT

    out = []
    for p in accepted:
        if abs(p.j - p.i) in (1, n - 1) or p.n_inliers >= MIN_SUPPORT:
            continue
        rest = [(q.i, q.j) for q in accepted if q is not p]
        if not any(p.i in c and p.j in c for c in connected_components(n, rest)):
            out.append(p)
    return out


def _solve_graph(
    n: int,
    accepted: Sequence,
    estimate_scale: bool,
    voxel_m: float,
    max_residual: tuple[float, float],
    window: int = 0,
) -> tuple[list[int], dict[int, float], dict[int, np.ndarray], list[Edge], list[tuple[int, int]]]:
    """Largest connected part, scales, pose graph; edges that disagree with the optimised poses (cycle
    check) are removed one at a time, worst first, until all agree. Returns ``(nodes, scales, poses, kept
    metric edges, removed (i, j))``.

    An edge's weight is its verified overlap, doubled between neighbours in capture order (at most
    ``window`` photos apart): the spanning tree, whose edges the optimiser treats as certain, then follows
    the capture order, and a retrieval pair that the room's symmetry fooled (a pan in a square room: two
    walls alike, 90 degrees apart) is the loop closure that the optimiser and the cycle check prune, not
    the chain of neighbours it contradicts."""
    active = list(accepted)
    removed: list[tuple[int, int]] = []
    while True:
        comp = largest_component(n, [(p.i, p.j) for p in active])
        reference = comp[0]
        raw = [
            Edge(p.i, p.j, p.transform, p.scale, _edge_weight(p, window), p.information)
            for p in active
            if p.i in comp and p.j in comp
        ]
        scales = solve_scales(comp, raw, reference) if estimate_scale else {k: 1.0 for k in comp}
        edges = []
        for e in raw:
            t = e.transform.copy()
            t[:3, 3] *= scales[e.i]  # translation was in i's raw depth units
            edges.append(Edge(e.i, e.j, t, e.scale, e.weight, e.information))
        initial = spanning_tree_poses(comp, edges, reference)
        poses, pruned = optimise_poses(comp, edges, reference, initial, max_correspondence_m=2.0 * voxel_m)
        bad = []
        for e in edges:
            ang, dist = _edge_residual(poses, e)
            excess = max(ang / max_residual[0], dist / max_residual[1])
            if excess > 1.0 or (e.i, e.j) in pruned:
                bad.append((excess if excess > 1.0 else 1.0, e.i, e.j))
        if not bad and estimate_scale:
            # model depth: a pose that geometry alone found (no feature matches support it) and that no
            # other path through the graph confirms may be the room's symmetric twin, which the dense check
            # cannot tell from the right pose at model depth's tolerance (a plain pan: 90-120 degrees off)
            inside = [p for p in active if p.i in comp and p.j in comp]
            bad = [(1.0, p.i, p.j) for p in _unconfirmed(n, inside)]
        if not bad:
            return comp, scales, poses, edges, removed
        _, bi, bj = max(bad)
        log.debug("edge %s-%s disagrees with the other poses: removed", bi, bj)
        removed.append((bi, bj))
        active = [p for p in active if (p.i, p.j) != (bi, bj)]
        if not active:
            return [0], {0: 1.0}, {0: np.eye(4)}, [], removed


#: Loop closures are tried from frames at least this much motion (:func:`_motion`: metres plus radians) apart
#: along the capture order: every frame of a 12-photo walk through a room (0.36-0.86 per step), every third
#: to fifth of a 48-photo one (0.08-0.21), so that the pairs tried grow with the path, not with N.
LOOP_STEP = 0.35


def _motion(a: np.ndarray, b: np.ndarray) -> float:
    """Motion between two camera poses: distance (m) plus the angle between them (rad, a metre per radian)."""
    cos = (np.trace(a[:3, :3].T @ b[:3, :3]) - 1.0) / 2.0
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3]) + np.arccos(np.clip(cos, -1.0, 1.0)))


def _travel(comp: Sequence[int], poses: dict[int, np.ndarray]) -> dict[int, float]:
    """Cumulative :func:`_motion` along the capture order (the sorted frames ``comp``) up to each frame."""
    out, total = {comp[0]: 0.0}, 0.0
    for a, b in itertools.pairwise(comp):
        total += _motion(poses[a], poses[b])
        out[b] = total
    return out


def _loop_sources(comp: Sequence[int], poses: dict[int, np.ndarray]) -> list[int]:
    """The frames loop closures start from: :data:`LOOP_STEP` of motion apart along the capture order, so
    that their number grows with the path, not with how densely it was photographed."""
    travel, out, last = _travel(comp, poses), [], -np.inf
    for k in comp:
        if travel[k] - last >= LOOP_STEP:
            out.append(k)
            last = travel[k]
    return out


def _hops(n: int, edges: Sequence[Edge]) -> np.ndarray:
    """(n, n) number of edges on the shortest path between two frames (inf when not connected)."""
    from scipy.sparse import coo_matrix, csgraph

    pairs = np.array([(e.i, e.j) for e in edges], dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
    return csgraph.shortest_path(graph, method="D", directed=False, unweighted=True)


def _free_poses(
    k: int, pairs, comp: Sequence[int], poses: dict[int, np.ndarray], scales: dict[int, float]
) -> list[tuple[int, np.ndarray, float, np.ndarray]]:
    """What the pairs of a left-out frame ``k`` with registered frames found but refused as free
    (:attr:`metrocli.geometry.registration.PairRegistration.free_directions`): ``(the registered frame,
    camera-to-reference pose of k, depth scale of k, (K, 3) free directions in the reference frame)``."""
    out = []
    for p in pairs:
        if p.ok or p.free_directions is None or not len(p.free_directions) or k not in (p.i, p.j):
            continue
        a = p.j if p.i == k else p.i
        if a not in comp:
            continue
        t = np.asarray(p.transform, dtype=np.float64).copy()
        if p.i == a:  # p_a = T (r p_k): k's pose through a's, directions in a's frame
            t[:3, 3] *= scales[a]
            pose_k, scale_k = poses[a] @ t, scales[a] * p.scale
            free = p.free_directions @ poses[a][:3, :3].T
        else:  # p_k = T (r p_a): translation in k's depth units
            scale_k = scales[a] / p.scale
            t[:3, 3] *= scale_k
            pose_k = poses[a] @ np.linalg.inv(t)
            free = p.free_directions @ pose_k[:3, :3].T
        out.append((a, pose_k, scale_k, free))
    return sorted(out, key=lambda c: len(c[3]))  # the best determined first: one free direction, not two


def _place_free_frames(
    frames: Sequence,
    comp: Sequence[int],
    poses: dict[int, np.ndarray],
    scales: dict[int, float],
    pairs: dict,
    data: Sequence,
    try_pair,
    opts,
    voxel_m: float,
    max_residual: tuple[float, float],
    budget: int,
) -> bool:
    """Frames left out because the pairs that found their pose refused it as free (a bare wall and the
    floor seen from a turn that the capture order does not predict): that pose, placed through the
    registered frame (:func:`_free_poses`), predicts the pairs with the other registered frames, those
    whose shared surfaces near the predicted pose would fix the free directions most firmly first (up to
    ``budget`` pairs per frame, each registered and verified by ``try_pair(i, j, predicted)`` like any
    other). A pose is accepted only when
    its pair's shared surfaces fix the free directions as firmly as a pose that is not degenerate
    (:data:`metrocli.geometry.pairs.WEAK_EIGENVALUE`: ICP captured by a few points of a nearby structure
    leaves a pose 10 cm off along a wall, and the slide test does not see it) and it agrees with the
    prediction along the directions the first pair did fix (the cycle check's tolerances). The pairs
    tried are recorded in ``pairs``; returns whether a frame was placed."""
    from metrocli.geometry.pairs import SLIDE_M, WEAK_EIGENVALUE, pinning, shared_surface
    from metrocli.geometry.verification import verify_pose

    placed = False
    for k in range(len(frames)):
        if k in comp:
            continue
        tries, done = 0, False
        for a, pose_k, scale_k, free in _free_poses(k, pairs.values(), comp, poses, scales):
            candidates = []
            for b in comp:
                if b == a:
                    continue
                i, j = min(b, k), max(b, k)
                pose_i, s_i = (poses[b], scales[b]) if i == b else (pose_k, scale_k)
                s_j = scales[b] if j == b else scale_k
                rel = np.linalg.inv(pose_i) @ (poses[b] if j == b else pose_k)
                rel[:3, 3] /= s_i
                quick = verify_pose(
                    data[i].view, data[j].view, rel, s_j / s_i, tol_m=opts.tol_m, tol_rel=opts.tol_rel
                )
                if quick.overlap < opts.min_overlap:
                    continue
                free_i = free @ pose_i[:3, :3]  # the free directions in i's frame
                # the surfaces near the predicted pose, which may be off by tens of centimetres along them
                near = shared_surface(data[i], data[j], rel, s_j / s_i, 2.0 * SLIDE_M + 2.0 * voxel_m)[1]
                candidates.append((pinning(near, free_i), i, j, rel, s_j / s_i, free_i))
            candidates.sort(key=lambda c: -c[0])
            for _, i, j, rel, ratio, free_i in candidates[: max(0, budget - tries)]:
                tries += 1
                p = try_pair(i, j, (rel, ratio))
                if p.ok:
                    surface = shared_surface(data[i], data[j], p.transform, p.scale, 2.0 * voxel_m)
                    fixed = pinning(surface[1], free_i)
                    turn, _ = _edge_residual({i: np.eye(4), j: p.transform}, Edge(i, j, rel))
                    across = p.transform[:3, 3] - rel[:3, 3]
                    across = float(np.linalg.norm(across - free_i.T @ (free_i @ across)))
                    if fixed < WEAK_EIGENVALUE or turn > max_residual[0] or across > max_residual[1]:
                        reason = (
                            f"a pose that fits, but it does not fix what the pair with {frames[a].name} left "
                            f"free (pinning {fixed:.3f}; {turn:.1f} deg / {across:.2f} m off its prediction)"
                        )
                        p = replace(p, ok=False, reason=reason)
                log.debug(
                    "%s placed through %s, checked on %s-%s: %s %s",
                    frames[k].name, frames[a].name, frames[i].name, frames[j].name, p.ok, p.reason,
                )  # fmt: skip
                pairs[(i, j)] = p
                if p.ok:
                    placed = done = True
                    break
            if done or tries >= budget:
                break
    return placed


def _pose_uncertainty(
    poses: dict[int, np.ndarray],
    edges: Sequence[Edge],
    pairs: dict,
    reference: int,
    moved: dict[int, tuple[float, float]] | None = None,
):
    """One-sigma (rotation deg, camera centre m) of each pose from the whole graph
    (:func:`metrocli.geometry.pose_uncertainty.graph_pose_sigmas`: it grows along chains, shrinks at loops),
    each edge's information scaled by its residual, floored for the pair's systematic error and at least
    what verification pins (:func:`metrocli.geometry.pose_uncertainty.edge_information`); with model
    depth ``moved`` (:func:`_correct_depth`: how far the joint depth correction moved the pose) is added in
    quadrature, since the information treats a model's smooth depth distortion as noise that averages out,
    and a photo that one edge links also takes its neighbour's move: nothing separates its own turn from a
    tilt of its depth."""
    from metrocli.geometry.pose_uncertainty import edge_information, graph_pose_sigmas

    moved = moved or {}
    graph: list[tuple[int, int, np.ndarray]] = []
    for e in edges:
        if e.information is None:
            continue
        p = pairs[(e.i, e.j)]
        sigma = max(float(p.residual_m), 1e-3) if np.isfinite(p.residual_m) else 0.01
        graph.append((e.i, e.j, edge_information(np.asarray(e.information) / sigma**2)))
    base = graph_pose_sigmas(poses, graph, reference)
    out: dict[int, tuple[float, float]] = {}
    for k, (rot, trans) in base.items():
        turn, shift = moved.get(k, (0.0, 0.0)) if k != reference else (0.0, 0.0)
        out[k] = (float(np.hypot(rot, turn)), float(np.hypot(trans, shift)))
    # a photo that one edge links to the others is only as certain as the photo at its other end (the graph
    # has that) and, with model depth, nothing separates its own turn from a tilt of its depth: its
    # neighbour's move adds (a checkered walk's last but two photo: 1.4 degrees off, 1.0 claimed alone)
    degree = {k: sum(k in (e.i, e.j) for e in edges) for k in poses}
    for e in edges:
        for k, other in ((e.i, e.j), (e.j, e.i)):
            if k != reference and degree[k] == 1 and degree[other] > 1 and other in moved:
                (rot, trans), (turn, shift) = out[k], moved[other]
                out[k] = (float(np.hypot(rot, turn)), float(np.hypot(trans, shift)))
    return out


#: The joint refinement of poses and depth corrections is kept only when it lowers the edges' robust
#: point-to-plane residual by this share, leaves no edge worse and turns no photo by more than
#: :data:`CORRECTION_MAX_TURN` times the cycle check's tolerance.
CORRECTION_GAIN = 0.1
CORRECTION_MAX_TURN = 2.0
#: The joint refinement's feature matches of an edge: Lowe's ratio test's and, when fewer than
#: :data:`GUIDED_BELOW` of those agree with the graph's poses, of each keypoint's :data:`GUIDED_K` nearest
#: descriptors the nearest that the poses place within :data:`GUIDED_GATE_PX` of it
#: (:func:`metrocli.geometry.pairs.guided_matches`). A checkered walk's later edges keep 0-20 agreeing
#: matches of 150-300; a richly textured walk's 60-280 (more matches there only outweigh the surfaces).
GUIDED_K = 5
GUIDED_GATE_PX = 8.0
GUIDED_BELOW = 30


def _correct_depth(
    frames: Sequence,
    features: Sequence,
    poses: dict[int, np.ndarray],
    scales: dict[int, float],
    edges: Sequence[Edge],
    reference: int,
    max_residual_deg: float,
) -> tuple[dict[int, np.ndarray], dict[int, float], dict[int, np.ndarray], dict[int, tuple[float, float]]]:
    """Per-frame smooth depth corrections estimated jointly with the poses and scales (model depth) from
    the graph's kept edges, their surfaces and their image ``features``' matches
    (:func:`metrocli.geometry.depth_correction.refine_jointly`, started from the graph's solution). Kept
    only when the edges' residual drops by :data:`CORRECTION_GAIN`, no edge's median residual grows and no
    pose turns by more than :data:`CORRECTION_MAX_TURN` x ``max_residual_deg`` (the
    graph's poses at model depth are off by degrees where the distortion tilted the surfaces: a plain
    orbit's by up to 4.8 degrees, which the refinement brings within 0.6); otherwise the graph's poses and
    scales are returned with no correction. Returns ``(poses, scales, coefficients, moved)``; ``moved``:
    ``{k: (turn_deg, shift_m)}``, how far the refinement moved each pose from the graph's, kept or not (the
    pose ambiguity the model's distortion leaves, :func:`_pose_uncertainty`)."""
    from metrocli.geometry.depth_correction import refine_jointly
    from metrocli.geometry.pairs import guided_matches
    from metrocli.geometry.registration import match_features

    matches = {}
    for e in edges:
        fi, fj = features[e.i], features[e.j]
        m = match_features(fi, fj)
        if fi.points_m is not None and fi.valid is not None:
            # on a periodic texture the ratio test keeps few right matches, and what the features leave
            # unfixed the surfaces trade between a turn and a tilt of the depth: where few of its matches
            # agree with the graph's poses, the ones those poses single out join (keypoints not yet matched)
            guided = guided_matches(
                fi, fj, fi.points_m * scales[e.i], fi.valid, np.linalg.inv(poses[e.j]) @ poses[e.i],
                frames[e.j].intrinsics, k=GUIDED_K, gate_px=GUIDED_GATE_PX,
            )  # fmt: skip
            agree = (m[:, None, :] == guided[None, :, :]).all(axis=2).any(axis=1)
            if agree.sum() < GUIDED_BELOW:
                guided = guided[~np.isin(guided[:, 0], m[:, 0]) & ~np.isin(guided[:, 1], m[:, 1])]
                m = np.vstack([m, guided])
        matches[(e.i, e.j)] = (fi.keypoints_px[m[:, 0]], fj.keypoints_px[m[:, 1]])
    fit = refine_jointly(
        {k: frames[k].depth_m for k in poses}, {k: frames[k].intrinsics for k in poses}, poses, scales,
        [(e.i, e.j) for e in edges], reference, matches=matches,
    )  # fmt: skip
    moved = {k: _edge_residual({0: poses[k], 1: fit.poses[k]}, Edge(0, 1, np.eye(4))) for k in poses}
    turn = max(m[0] for m in moved.values())
    worse = [key for key, (before, after) in fit.edge_median_m.items() if not after <= before]
    log.debug(
        "depth correction: edge residual %.4f -> %.4f m, largest turn %.2f deg, edges worse %s",
        fit.rms_before_m, fit.rms_after_m, turn, worse,
    )  # fmt: skip
    if (
        fit.rms_after_m > (1.0 - CORRECTION_GAIN) * fit.rms_before_m
        or worse
        or turn > CORRECTION_MAX_TURN * max_residual_deg
    ):
        return poses, scales, {}, moved
    return fit.poses, fit.scales, fit.coefficients, moved


def register_frames(
    frames: Sequence,
    *,
    estimate_scale: bool = False,
    scale_reference: str = "first",
    icp: str = "point-to-plane",
    icp_voxel_m: float | None = None,
    window: int = 2,
    retrieval: int = 4,
    loop_closures: int = 3,
    seed: int = 0,
    correct_depth: bool = True,
) -> MultiviewRegistration:
    """Register RGB-D frames (:class:`metrocli.geometry.registration.Frame`), given in capture order.

    1. SIFT features per frame; candidate pairs from the capture order (``window`` next frames) and image
       retrieval (``retrieval`` most similar frames) (:mod:`metrocli.geometry.pairing`), not all pairs.
    2. Each candidate pair registered and densely verified (:func:`metrocli.geometry.pairs.register_pair`:
       feature and FPFH hypotheses, refined by ICP before they are judged, ambiguous pairs refused); a
       photo and the next one also get the motion of the previous step as a hypothesis (capture order).
    3. Largest connected part of the verified pairs; per-frame depth scales (``estimate_scale``); Open3D
       pose-graph optimisation, its spanning tree led by neighbours in capture order; pairs that disagree
       with the optimised poses are removed (cycle check) and the graph solved again.
    4. Frames left out whose pairs found a pose that fits but refused it as free (a bare wall and the
       floor): placed through that pair, the pose predicts pairs with other registered frames; one whose
       shared surfaces fix the free directions places the frame (:func:`_place_free_frames`). Exact depth
       only: with ``estimate_scale`` such a frame is left out.
    5. Loop closures: up to ``loop_closures`` untried pairs per frame whose cameras the poses place close
       together are registered from the predicted pose, verified and added; the graph is solved again.
    6. Model depth (``estimate_scale`` and ``correct_depth``, 3 frames or more): a smooth depth correction
       per frame, estimated jointly with the poses and scales (:func:`_correct_depth`); the result carries it
       (:attr:`MultiviewRegistration.depth_correction`, :meth:`MultiviewRegistration.depth_factor`).
    7. Frames outside the final graph are left out with the reason.

    Raises:
        ReconstructionError: fewer than 2 frames, or no pair of frames could be registered.
    """
    from metrocli.errors import ReconstructionError
    from metrocli.geometry.pairing import candidate_pairs
    from metrocli.geometry.pairs import MODEL_VERIFY, SENSOR_VERIFY, FrameData, register_pair
    from metrocli.geometry.registration import PairRegistration, detect_features, frame_cloud, lift_features
    from metrocli.geometry.verification import dense_view, verify_pose

    n = len(frames)
    if n < 2:
        raise ReconstructionError(f"multi-view reconstruction needs at least 2 photos, got {n}")
    if icp_voxel_m is None:
        depths = [np.percentile(d[d > 0], 90) for f in frames if (d := np.nan_to_num(f.depth_m)).any()]
        icp_voxel_m = float(np.clip(max(depths, default=1.5) / 150.0, 0.01, 0.1))
    fpfh_voxel_m = max(0.05, 2.5 * icp_voxel_m)
    opts = MODEL_VERIFY if estimate_scale else SENSOR_VERIFY
    data = [
        FrameData(
            f,
            lift_features(detect_features(f.rgb), f),
            dense_view(f.rgb, f.depth_m, f.intrinsics),
            frame_cloud(f, voxel_m=icp_voxel_m, max_points=80_000),
        )
        for f in frames
    ]

    def pair(i: int, j: int, predicted=None, predicted_source: str = "prediction"):
        p = register_pair(
            i, j, data[i], data[j], with_scale=estimate_scale, opts=opts, icp=icp,
            icp_voxel_m=icp_voxel_m, fpfh_voxel_m=fpfh_voxel_m, predicted=predicted,
            predicted_source=predicted_source, seed=seed,
        )  # fmt: skip
        log.debug("pair %s-%s: %s %s", frames[i].name, frames[j].name, p.ok, p.reason or p.source)
        return p

    pairs: dict[tuple[int, int], PairRegistration] = {}
    for i, j in candidate_pairs([d.features.descriptors for d in data], window=window, k=retrieval):
        # capture order: the next photo moved about as the last one did (a constant-motion hypothesis,
        # what registers a pan or a walk past bare walls, where neither features nor FPFH find the pose)
        last = pairs.get((i - 1, i))
        motion = (last.transform, last.scale) if j == i + 1 and last is not None and last.ok else None
        pairs[(i, j)] = pair(i, j, motion, "motion")
    good = [p for p in pairs.values() if p.ok]
    if not good:
        best = max(pairs.values(), key=lambda p: (p.n_matches, p.i))
        raise ReconstructionError(
            f"no two photos overlap enough to register (best pair {frames[best.i].name} / "
            f"{frames[best.j].name}: {best.reason})"
        )
    max_residual = (3.0, 0.15) if estimate_scale else (1.5, 0.05)
    solved = _solve_graph(n, good, estimate_scale, icp_voxel_m, max_residual, window)
    comp, scales, poses, edges, removed = solved
    # frames left out because the pairs that found their pose left it free: other pairs may fix it. Not
    # with model depth: its distorted walls pin nothing to a degree, and a tiled orbit's views placed this
    # way pulled their neighbours 6 degrees off (issue 16); such a frame is left out instead
    if (
        not estimate_scale
        and len(comp) > 1
        and _place_free_frames(
            frames, comp, poses, scales, pairs, data, pair, opts, icp_voxel_m, max_residual, loop_closures
        )
    ):
        good = [p for p in pairs.values() if p.ok and (p.i, p.j) not in removed]
        solved = _solve_graph(n, good, estimate_scale, icp_voxel_m, max_residual, window)
        comp, scales, poses, edges, more = solved
        removed += more
    if loop_closures > 0 and len(comp) > 2:
        added = False
        hops = _hops(n, edges)
        axes = {k: poses[k][:3, 2] for k in comp}
        for i in _loop_sources(comp, poses):
            # frames the graph links only through a long chain (a revisit, the end of an orbit), nearest
            # first (camera distance plus a metre per unit of 1 - cos of the angle between the view axes)
            near = sorted(
                (np.linalg.norm(poses[i][:3, 3] - poses[j][:3, 3]) + 1.0 - float(axes[i] @ axes[j]), j)
                for j in comp
                if j > i and hops[i, j] > 2 and (i, j) not in pairs and float(axes[i] @ axes[j]) > 0.0
            )
            for _, j in near[:loop_closures]:
                rel = np.linalg.inv(poses[i]) @ poses[j]
                rel[:3, 3] /= scales[i]
                ratio = scales[j] / scales[i]
                quick = verify_pose(
                    data[i].view, data[j].view, rel, ratio, tol_m=opts.tol_m, tol_rel=opts.tol_rel
                )
                if quick.overlap < opts.min_overlap:
                    continue
                p = pair(i, j, predicted=(rel, ratio))
                pairs[(i, j)] = p
                added |= p.ok
        if added:
            good = [p for p in pairs.values() if p.ok and (p.i, p.j) not in removed]
            solved = _solve_graph(n, good, estimate_scale, icp_voxel_m, max_residual, window)
            comp, scales, poses, edges, more = solved
            removed += more
    corrections: dict[int, np.ndarray] = {}
    moved: dict[int, tuple[float, float]] = {}
    if estimate_scale and correct_depth and len(comp) >= 3:
        features = [d.features for d in data]
        poses, scales, corrections, moved = _correct_depth(
            frames, features, poses, scales, edges, comp[0], max_residual[0]
        )
    reference = comp[0]
    left_out = _left_out_reasons(frames, list(pairs.values()), comp, removed)
    uncertainty = _pose_uncertainty(poses, edges, pairs, reference, moved)
    spread = float(np.std([np.log(scales[k]) for k in comp])) if estimate_scale else 0.0
    if estimate_scale and scale_reference in ("mean", "median"):
        g = reference_scale([scales[k] for k in comp], scale_reference)
        scales = {k: s / g for k, s in scales.items()}
        for pose in poses.values():
            pose[:3, 3] /= g
    return MultiviewRegistration(
        reference, poses, scales, left_out, tuple(pairs[key] for key in sorted(pairs)), tuple(removed),
        scale_reference if estimate_scale else "first", uncertainty, spread, corrections,
    )  # fmt: skip


def reference_scale(scales: Sequence[float], scale_reference: str) -> float:
    """The scale that becomes 1: the median of ``scales`` (``"median"``: the majority's, which one outlying
    photo does not move), their geometric mean (``"mean"``), or the first one (``"first"``)."""
    logs = np.log(np.asarray(scales, np.float64))
    if scale_reference == "median":
        return float(np.exp(np.median(logs)))
    if scale_reference == "mean":
        return float(np.exp(np.mean(logs)))
    return float(scales[0])


def _left_out_reasons(
    frames: Sequence, pairs: Sequence, comp: Sequence[int], removed: Sequence[tuple[int, int]]
) -> dict[int, str]:
    comp_set = set(comp)
    dropped = set(removed)
    out: dict[int, str] = {}
    for k in range(len(frames)):
        if k in comp_set:
            continue
        mine = [p for p in pairs if k in (p.i, p.j)]
        linked = [p for p in mine if p.ok and (p.i, p.j) not in dropped]
        if linked:
            others = sorted({frames[p.j if p.i == k else p.i].name for p in linked})
            out[k] = f"overlaps only with photos outside the main group ({', '.join(others)})"
        elif any(p.ok for p in mine):
            out[k] = "its registrations disagree with the poses of the other photos (cycle check)"
        elif not mine:
            out[k] = "no candidate pair (not similar to any other photo)"
        else:
            best = max(mine, key=lambda p: (p.n_inliers, p.n_matches))
            other = frames[best.j if best.i == k else best.i].name
            out[k] = f"no overlap with any other photo (best: {other}, {best.reason})"
    return out

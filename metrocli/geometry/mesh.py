"""Triangle meshes of one depth map: the pixel-grid mesh and a density-trimmed screened Poisson mesh.

``grid``
    Neighbouring pixels are joined into triangles (two per 2x2 block, split along the shorter 3D diagonal;
    one when a corner is missing). A triangle is skipped when its corners do not lie on the same surface
    (relative depth jump above ``max_rel_jump``, see :mod:`metrocli.geometry.sampling`) or one of them
    was removed as a flying pixel. Vertices are the exact backprojected pixels; vertex normals are the given
    normals (the model's, or the depth-gradient normals of sensor depth), falling back to the mesh's own
    area-weighted normals where those are unknown.
``poisson``
    Open3D screened Poisson reconstruction of the oriented point cloud, trimmed: vertices whose Poisson
    density is below the ``density_quantile`` of all densities, or farther from the nearest input point
    than ``max_gap_factor`` times the median point spacing, are removed, so the surface does not balloon
    past what the photo saw.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.backproject import backproject
from metrocli.geometry.normals import known_normals, normals_from_depth, orient_towards_camera
from metrocli.geometry.pointcloud import CleanOptions, PointCloud, clean_mask, fill_missing_normals

if TYPE_CHECKING:
    import open3d as o3d


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh in the camera frame (metres).

    Attributes:
        vertices: (N, 3) float32.
        triangles: (M, 3) int32 vertex indices, counter-clockwise seen from the camera (normals face it).
        vertex_normals: (N, 3) float32 unit normals.
        vertex_colors: (N, 3) uint8 RGB, or None.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    vertex_normals: np.ndarray
    vertex_colors: np.ndarray | None = None

    def to_open3d(self) -> o3d.geometry.TriangleMesh:
        import open3d as o3d

        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(self.vertices.astype(np.float64)),
            o3d.utility.Vector3iVector(self.triangles.astype(np.int32)),
        )
        mesh.vertex_normals = o3d.utility.Vector3dVector(self.vertex_normals.astype(np.float64))
        if self.vertex_colors is not None:
            mesh.vertex_colors = o3d.utility.Vector3dVector(self.vertex_colors.astype(np.float64) / 255.0)
        return mesh

    @staticmethod
    def from_open3d(mesh: o3d.geometry.TriangleMesh) -> Mesh:
        """From a legacy Open3D TriangleMesh (normals computed when absent)."""
        if not mesh.has_vertex_normals():
            mesh.compute_vertex_normals()
        colors = None
        if mesh.has_vertex_colors():
            colors = np.clip(np.rint(np.asarray(mesh.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
        normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
        normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        return Mesh(
            np.asarray(mesh.vertices, dtype=np.float32),
            np.asarray(mesh.triangles, dtype=np.int32),
            normals.astype(np.float32),
            colors,
        )


def _stride(
    depth: np.ndarray, intrinsics: Intrinsics, stride: int, *maps: np.ndarray | None
) -> tuple[np.ndarray, Intrinsics, list[np.ndarray | None]]:
    """Every ``stride``-th pixel, with the intrinsics of that sub-grid (pixel centres stay exact)."""
    if stride == 1:
        return depth, intrinsics, list(maps)
    sub = depth[::stride, ::stride]
    h, w = sub.shape
    k = replace(
        intrinsics,
        fx=intrinsics.fx / stride,
        fy=intrinsics.fy / stride,
        cx=intrinsics.cx / stride,
        cy=intrinsics.cy / stride,
        width=w,
        height=h,
    )
    return sub, k, [None if m is None else m[::stride, ::stride] for m in maps]


def grid_mesh(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    *,
    rgb: np.ndarray | None = None,
    normal: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    options: CleanOptions = CleanOptions(),
    stride: int = 1,
) -> Mesh:
    """Mesh of the pixel grid of a depth map (see the module docstring).

    Args:
        depth_m: (H, W) metres.
        intrinsics: intrinsics of this H x W image.
        rgb: (H, W, 3) uint8 photo for vertex colours, or None.
        normal: (H, W, 3) unit normals for the vertices; None → depth-gradient normals.
        confidence: (H, W) confidence for the flying-pixel removal, or None.
        stride: use every ``stride``-th pixel in u and v (for large photos).
    Returns:
        :class:`Mesh`; empty (0 triangles) when no three neighbouring pixels are on one surface.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    depth, intrinsics, (rgb, normal, confidence) = _stride(depth, intrinsics, stride, rgb, normal, confidence)
    if normal is None:
        normal = normals_from_depth(depth, intrinsics, max_rel_jump=options.max_rel_jump)
    keep = clean_mask(depth, intrinsics, normal=normal, confidence=confidence, options=options)
    points = backproject(depth, intrinsics, max_depth_m=options.max_depth_m)
    z = np.where(keep, depth, np.nan)

    # Corners of every 2x2 block: a=(v,u) b=(v,u+1) c=(v+1,u) d=(v+1,u+1).
    za, zb, zc, zd = z[:-1, :-1], z[:-1, 1:], z[1:, :-1], z[1:, 1:]
    h, w = z.shape
    idx = np.arange(h * w, dtype=np.int64).reshape(h, w)
    ia, ib, ic, id_ = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    pa, pb, pc, pd = points[:-1, :-1], points[:-1, 1:], points[1:, :-1], points[1:, 1:]
    jump = options.max_rel_jump

    def coplanar(*zs: np.ndarray) -> np.ndarray:
        stack = np.stack(zs)
        with np.errstate(invalid="ignore"):
            lo = stack.min(axis=0)
            hi = stack.max(axis=0)
            return np.isfinite(lo) & np.isfinite(hi) & (hi - lo <= jump * lo)

    with np.errstate(invalid="ignore"):
        diag_ad = np.linalg.norm(pa - pd, axis=-1)
        diag_bc = np.linalg.norm(pb - pc, axis=-1)
    use_ad = ~(diag_bc < diag_ad)  # split along the shorter diagonal; a-d when equal or unknown
    # Triangles of the b-c split (a,c,b), (b,c,d) and of the a-d split (a,c,d), (a,d,b), all wound so that
    # their normals face the camera. With all four corners on one surface, the split along the shorter
    # diagonal is made; otherwise the usable triangles of the b-c split, or else those of the a-d split
    # (the two splits overlap, so never both).
    all_four = coplanar(za, zb, zc, zd)
    acb, bcd = coplanar(za, zc, zb), coplanar(zb, zc, zd)
    acd, adb = coplanar(za, zc, zd), coplanar(za, zd, zb)
    bc_any = acb | bcd
    bc_sel = np.where(all_four, ~use_ad, True)
    ad_sel = np.where(all_four, use_ad, ~bc_any)
    tris = [
        np.stack([c[m] for c in corners], axis=1)
        for corners, m in (
            ((ia, ic, ib), acb & bc_sel),
            ((ib, ic, id_), bcd & bc_sel),
            ((ia, ic, id_), acd & ad_sel),
            ((ia, id_, ib), adb & ad_sel),
        )
    ]
    triangles = np.concatenate(tris, axis=0)

    used = np.unique(triangles)
    remap = np.full(h * w, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    triangles = remap[triangles].astype(np.int32)
    vertices = points.reshape(-1, 3)[used].astype(np.float32)
    normals = np.asarray(normal, dtype=np.float32).reshape(-1, 3)[used]
    normals = orient_towards_camera(normals, vertices)
    colors = None if rgb is None else np.asarray(rgb, dtype=np.uint8)[..., :3].reshape(-1, 3)[used]
    missing = ~known_normals(normals)
    if missing.any():
        normals[missing] = _face_vertex_normals(vertices, triangles)[missing]
    return Mesh(vertices, triangles, normals, colors)


def _face_vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(N, 3) float32 area-weighted unit vertex normals of a mesh (Open3D ``compute_vertex_normals``)."""
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
        o3d.utility.Vector3iVector(np.asarray(triangles, np.int32)),
    )
    mesh.compute_vertex_normals()
    return np.asarray(mesh.vertex_normals, np.float32)


def poisson_mesh(
    cloud: PointCloud,
    *,
    depth: int = 9,
    density_quantile: float = 0.05,
    max_gap_factor: float = 4.0,
    max_points: int | None = 1_000_000,
) -> Mesh:
    """Screened Poisson mesh of an oriented point cloud, trimmed to the observed surface.

    Args:
        cloud: points with normals facing the camera (unknown normals are estimated first).
        depth: octree depth of the Poisson solver (detail vs. time).
        density_quantile: remove vertices whose Poisson density is below this quantile.
        max_gap_factor: remove vertices farther than this times the median point spacing from the cloud.
        max_points: larger clouds are thinned to about this many points first (every n-th point).
    Returns:
        :class:`Mesh` with vertex normals and colours (from the cloud's colours).
    """
    import open3d as o3d

    if len(cloud) < 10:
        from metrocli.errors import ReconstructionError

        raise ReconstructionError(f"too few valid points ({len(cloud)}) for a Poisson mesh")
    if max_points and len(cloud) > max_points:
        step = int(np.ceil(len(cloud) / max_points))
        cloud = cloud.subset(np.arange(0, len(cloud), step))
    cloud = fill_missing_normals(cloud)
    pcd = cloud.to_open3d()
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh, densities = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            pcd, depth=depth, scale=1.1, linear_fit=False
        )
    density = np.asarray(densities)
    vertices = np.asarray(mesh.vertices)
    remove = density < np.quantile(density, density_quantile)
    spacing = np.asarray(pcd.compute_nearest_neighbor_distance())
    gap = max_gap_factor * float(np.median(spacing[spacing > 0])) if np.any(spacing > 0) else np.inf
    vpcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(vertices))
    dist = np.asarray(vpcd.compute_point_cloud_distance(pcd))
    remove |= dist > gap
    mesh.remove_vertices_by_mask(remove)
    mesh.remove_unreferenced_vertices()
    mesh.compute_vertex_normals()
    out = Mesh.from_open3d(mesh)
    normals = orient_towards_camera(out.vertex_normals, out.vertices)
    return replace(out, vertex_normals=normals)


def simplify(mesh: Mesh, target_triangles: int) -> Mesh:
    """Quadric-decimate ``mesh`` to about ``target_triangles`` triangles (no-op when already smaller).

    Meshes much larger than the target are first vertex-clustered to about 4x the target (quadric
    decimation alone is slow on millions of triangles). Vertex colours are kept; vertex normals are
    recomputed from the simplified surface and face the camera.
    """
    if target_triangles <= 0:
        raise ValueError(f"target triangle count must be positive, got {target_triangles}")
    if len(mesh.triangles) <= target_triangles:
        return mesh
    import open3d as o3d

    o3d_mesh = mesh.to_open3d()
    o3d_mesh.vertex_normals = type(o3d_mesh.vertex_normals)()  # recomputed below
    if len(mesh.triangles) > 8 * target_triangles:
        # quadric decimation is slow on big meshes: first cluster vertices on a grid sized for ~4x the
        # target (a regular mesh of area A with cell size s has about 2 A / s^2 triangles)
        area = o3d_mesh.get_surface_area()
        if area > 0:
            voxel = float(np.sqrt(2.0 * area / (4.0 * target_triangles)))
            o3d_mesh = o3d_mesh.simplify_vertex_clustering(
                voxel_size=voxel, contraction=o3d.geometry.SimplificationContraction.Average
            )
            o3d_mesh.remove_degenerate_triangles()
    simple = o3d_mesh.simplify_quadric_decimation(target_number_of_triangles=int(target_triangles))
    simple.remove_unreferenced_vertices()
    simple.compute_vertex_normals()
    out = Mesh.from_open3d(simple)
    return replace(out, vertex_normals=orient_towards_camera(out.vertex_normals, out.vertices))


def auto_stride(width: int, height: int, max_vertices: int | None) -> int:
    """Smallest pixel stride keeping a grid mesh of a ``width`` x ``height`` image within ``max_vertices``."""
    if not max_vertices:
        return 1
    stride = 1
    while (width // stride) * (height // stride) > max_vertices:
        stride += 1
    return stride

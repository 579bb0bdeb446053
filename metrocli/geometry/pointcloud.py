"""Cleaned metric point clouds from a depth map: backprojection, flying-pixel removal, per-point attributes.

Flying pixels are depth samples smeared between a foreground and a background surface at occlusion edges.
:func:`clean_mask` drops

- pixels without valid depth (0, NaN, inf, sky beyond ``max_depth_m``);
- the far side of depth discontinuities: a neighbour (8-neighbourhood) nearer by more than ``max_rel_jump``
  of the depth (see :func:`metrocli.geometry.normals.depth_edges`);
- pixels whose normal is nearly perpendicular to the view ray (more than ``max_grazing_deg`` from it);
- low-confidence pixels: confidence below ``min_rel_confidence`` times the median confidence of the valid
  pixels (the model's confidence has a model-specific scale, so the threshold is relative), and below
  ``min_confidence`` when that absolute threshold is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from metrocli.camera.intrinsics import Intrinsics
from metrocli.geometry.backproject import backproject
from metrocli.geometry.normals import (
    depth_edges,
    grazing_mask,
    known_normals,
    normals_from_depth,
    orient_towards_camera,
)
from metrocli.geometry.sampling import DEFAULT_MAX_DEPTH_M, DEFAULT_MAX_REL_JUMP, valid_depth_mask

if TYPE_CHECKING:
    import open3d as o3d


@dataclass(frozen=True)
class CleanOptions:
    """Thresholds of flying-pixel removal (see the module docstring).

    Attributes:
        max_rel_jump: relative depth jump to a nearer neighbour that marks a pixel as a flying pixel.
        max_grazing_deg: largest angle (degrees) between a normal and the reversed view ray; None disables.
        min_rel_confidence: drop pixels whose confidence is below this fraction of the median; 0 disables.
        min_confidence: absolute confidence threshold, or None.
        max_depth_m: depths at or beyond this are "no depth" (sky).
    """

    max_rel_jump: float = DEFAULT_MAX_REL_JUMP
    max_grazing_deg: float | None = 88.0
    min_rel_confidence: float = 0.1
    min_confidence: float | None = None
    max_depth_m: float = DEFAULT_MAX_DEPTH_M


@dataclass(frozen=True)
class PointCloud:
    """A point cloud in the camera frame of one photo (x right, y down, z forward), metres.

    Attributes:
        points: (N, 3) float32 metres.
        colors: (N, 3) uint8 RGB, or None.
        normals: (N, 3) float32 unit normals facing the camera (NaN or zero rows where unknown), or None.
        confidence: (N,) float32 per-point depth confidence (model scale; 1 for sensor depth), or None.
        pixels: (N, 2) int32 pixel coordinates (u, v) the points came from, or None.
    """

    points: np.ndarray
    colors: np.ndarray | None = None
    normals: np.ndarray | None = None
    confidence: np.ndarray | None = None
    pixels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def subset(self, index: np.ndarray) -> PointCloud:
        """The points selected by a bool mask or an index array."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return PointCloud(
            self.points[index],
            pick(self.colors),
            pick(self.normals),
            pick(self.confidence),
            pick(self.pixels),
        )

    def to_open3d(self) -> o3d.geometry.PointCloud:
        """Legacy Open3D point cloud with colours (0..1) and normals (NaN normals become zero)."""
        import open3d as o3d

        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points.astype(np.float64)))
        if self.colors is not None:
            pcd.colors = o3d.utility.Vector3dVector(self.colors.astype(np.float64) / 255.0)
        if self.normals is not None:
            pcd.normals = o3d.utility.Vector3dVector(np.nan_to_num(self.normals.astype(np.float64)))
        return pcd


def clean_mask(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    *,
    normal: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    options: CleanOptions = CleanOptions(),
) -> np.ndarray:
    """(H, W) bool: pixels that survive flying-pixel removal (see the module docstring).

    ``normal`` (H, W, 3) is used for the grazing-angle test (NaN normals pass); ``confidence`` (H, W) for the
    confidence thresholds.
    """
    keep = valid_depth_mask(depth_m, options.max_depth_m)
    keep &= ~depth_edges(depth_m, max_rel_jump=options.max_rel_jump, max_depth_m=options.max_depth_m)
    if normal is not None and options.max_grazing_deg is not None:
        keep &= ~grazing_mask(normal, intrinsics, max_angle_deg=options.max_grazing_deg)
    if confidence is not None:
        conf = np.asarray(confidence, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(conf)
            keep &= finite
            if options.min_rel_confidence > 0 and keep.any():
                median = float(np.median(conf[keep]))
                if median > 0:
                    keep &= conf >= options.min_rel_confidence * median
            if options.min_confidence is not None:
                keep &= conf >= options.min_confidence
    return keep


def point_cloud_from_depth(
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    *,
    rgb: np.ndarray | None = None,
    normal: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    options: CleanOptions = CleanOptions(),
    fill_normals: bool = True,
) -> PointCloud:
    """Cleaned point cloud of a depth map, with colours, normals and confidence per point.

    Args:
        depth_m: (H, W) metres.
        intrinsics: intrinsics of this H x W image.
        rgb: (H, W, 3) uint8 photo, or None.
        normal: (H, W, 3) unit normals (e.g. the model's); None → normals from the depth gradient.
        confidence: (H, W) per-pixel confidence, or None.
        fill_normals: estimate normals that are still unknown (sparse depth such as LiDAR) from the 3D
            neighbourhood of each point (Open3D KNN plane fit, oriented towards the camera).
    Returns:
        :class:`PointCloud` of the kept pixels.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    if normal is None:
        normal = normals_from_depth(depth, intrinsics, max_rel_jump=options.max_rel_jump)
    keep = clean_mask(depth, intrinsics, normal=normal, confidence=confidence, options=options)
    points_img = backproject(depth, intrinsics, max_depth_m=options.max_depth_m)
    vs, us = np.nonzero(keep)
    points = points_img[vs, us]
    normals = orient_towards_camera(np.asarray(normal, dtype=np.float32)[vs, us], points)
    colors = None if rgb is None else np.asarray(rgb, dtype=np.uint8)[vs, us, :3]
    conf = None if confidence is None else np.asarray(confidence, dtype=np.float32)[vs, us]
    pixels = np.stack([us, vs], axis=1).astype(np.int32)
    cloud = PointCloud(points.astype(np.float32), colors, normals, conf, pixels)
    if fill_normals:
        cloud = fill_missing_normals(cloud)
    return cloud


def fill_missing_normals(cloud: PointCloud, *, knn: int = 40) -> PointCloud:
    """Estimate the NaN normals of a cloud from its 3D neighbours (Open3D), oriented towards the camera."""
    if cloud.normals is None or len(cloud) < 3:
        return cloud
    missing = ~known_normals(cloud.normals)
    if not missing.any():
        return cloud
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.points.astype(np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=min(knn, len(cloud))))
    est = np.asarray(pcd.normals, dtype=np.float32)
    est = orient_towards_camera(est, cloud.points)
    normals = cloud.normals.copy()
    normals[missing] = est[missing]
    return PointCloud(cloud.points, cloud.colors, normals, cloud.confidence, cloud.pixels)

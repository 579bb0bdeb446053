"""3D geometry on numpy arrays (and open3d): backprojection, point clouds, meshes, measurement, fusion.
Never imports torch. Camera frame: x right, y down, z forward (OpenCV); intrinsics in pixels."""

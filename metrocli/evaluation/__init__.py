"""Evaluation of metric depth (and normals) against ground truth: dataset loading and metrics (numpy only)."""

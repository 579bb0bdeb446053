"""Orchestration: photo -> depth (model or sensor) -> geometry -> outputs. The model is imported lazily."""

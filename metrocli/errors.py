"""Exception hierarchy of metrocli.

The library raises only :class:`MetroError` subclasses for problems a user can fix (bad input, missing
weights, ...). The CLI turns them into one clean line on stderr and exit code 1 (``UsageError`` → exit 2).
Messages are complete sentences that name the file or value at fault; they never need a traceback.
"""

from __future__ import annotations


class MetroError(Exception):
    """Base class of every error metrocli raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1


class MetroUsageError(MetroError):
    """The request itself is malformed (bad option value, point outside the image, ...): CLI exit 2."""

    exit_code = 2


class ImageError(MetroError):
    """An image file is missing, empty, truncated, corrupt or in an unsupported format."""


class DepthMapError(MetroError):
    """A sensor depth map is missing, of the wrong size or dtype, or unreadable."""


class MeasurementError(MetroError):
    """A measurement cannot be made (point on invalid depth, ...)."""


class WeightsError(MetroError):
    """Model weights are missing, corrupt, unsafe or do not fit the model."""


class UnsafeCheckpointError(WeightsError):
    """A checkpoint would need arbitrary pickle code to load; it is refused and nothing of it runs."""


class ReconstructionError(MetroError):
    """Multi-view reconstruction failed (no overlapping photos, registration failed, ...)."""


class DatasetError(MetroError):
    """An evaluation dataset folder or its annotations are malformed."""


class OutputError(MetroUsageError):
    """An output path cannot be used: a special file, a folder, an input of the command, unwritable, ..."""


class DependencyError(MetroError):
    """An optional dependency the request needs (an extra such as ``metrocli[onnx]``) is not installed."""


class ExportError(MetroError):
    """A model export failed, or the exported file does not reproduce the model; nothing was written."""

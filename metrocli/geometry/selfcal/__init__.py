"""Self-calibration of the focal length from depth–normal consistency (issue 9). numpy + SciPy only.

Modules: :mod:`.terms` (the per-image precomputation: block means, box filters, masks, the depth-error
field basis), :mod:`.objective` (the robust loss at one focal length, its uncertainty and leverage),
:mod:`.manhattan` (the Manhattan frame and the snapped normals) and :mod:`.calibrate` (the search over the
FOV range, the choice between the two estimates, the result and the EXIF cross-check). The public names
are re-exported here.

Why the focal length is observable
----------------------------------
Metric3D predicts depth in a canonical camera; the metric depth of a photo taken with focal length ``f``
(pixels) is proportional to ``f``. Let ``depth0`` be the depth the model implies when the focal length is
*assumed* to be ``f0`` (:func:`self_calibrate`'s ``assumed_focal_px``). For any other focal length ``f``::

    Z_f(u, v) = depth0(u, v) * s,        s = f / f0
    X_f = (u - cx) * Z_f / f = (u - cx) * depth0 / f0 = X_0          (and Y_f = Y_0)

so the backprojected surface is the one at ``f0`` stretched by ``s`` along the optical axis. Surface normals
transform with the inverse transpose of ``diag(1, 1, s)``: the (unnormalised) normal at ``f`` is
``(s * n0x, s * n0y, n0z)`` where ``n0`` is the normal of the surface at ``f0``. This holds *exactly* for
normals computed as cross products of finite differences of the point map, because those differences are
linear in the points. The predicted normals do not depend on the focal length (Metric3D's normal head never
sees it), so the depth-derived normals agree with them only at the true ``f``.

Objective
---------
Inverse depth ``w = 1 / Z`` is affine in ``(u, v)`` on a plane, so its box-filtered central differences are
exact there. With ``g = grad(w) / w`` (per pixel, independent of ``f`` since depth scales uniformly), a plane
with normal ``n`` seen with focal ``f`` has ``g = (nx, ny) / (nx*(u - cx) + ny*(v - cy) + f*nz)``. The
objective is the robust (Welsch) mean of ``|g_measured - g_predicted(f) + grad(e)| / s``, with ``g_predicted``
from the (box-averaged) predicted normals, one scale ``s`` for the image (absolute residuals: strongly
inclined surfaces, whose gradient changes most with ``f``, weigh most) and ``e`` a smooth log-depth error
field profiled out at every ``f`` (ridge least squares, see below). This is the depth–normal angular
disagreement expressed linearly in the depth noise: the plain angle between predicted and depth-derived
normals (an earlier objective, removed) is biased by depth noise, because noise inflates the tilt of the
depth-derived normal (room scene at 77 mm, 3 % smooth depth error and 3 degrees of normal noise: mean -9 %,
worst -15 % over 6 seeds).

Smooth depth errors
-------------------
A network's depth error is mostly smooth: ``Z_pred = Z (1 + e(u, v))``. It shifts ``g`` by ``-grad(e)``, the
same for every surface, and on a single plane a smooth ``e`` is almost indistinguishable from a focal change
(a focal change by ``d`` looks like ``e = -d * Z / Z_axis`` on a plane that meets the optical axis at depth
``Z_axis``): at 77 mm, a 3 % error field of 2 cycles per image side tilts the depth-derived normals by tens of
degrees. Only the *relation between surfaces* pins ``f`` down: a focal change moves each plane's gradient
along its own direction (creases and occlusions break any smooth ``e``), a smooth field moves neighbouring
planes alike. So ``e`` is modelled as a linear ramp plus waves up to :data:`~.terms.NUISANCE_MAX_CYCLES`
cycles per image side (half-integer wave vectors, about 50 parameters) and fitted jointly: per focal length a
fixed ``P x 2N`` matrix product. On the test scenes (3 % depth noise as a smooth field, 3 degrees of normal
noise, 12 seeds) this cut the worst error from 22 % (room_03, tele) to below 4 %, and made exact scenes no
worse.

Precomputation (once per image): block-average to at most :data:`~.terms.WORK_MAX_SIDE` pixels, box-filter,
take differences, mask edges (inverse-depth curvature), creases (predicted normals turning), grazing pixels
and zero confidence, keep at most :data:`~.terms.MAX_SAMPLES` pixels. Each objective evaluation is then about
fifteen vectorised operations and two small matrix products on those pixels: a coarse log-spaced scan of the
FOV range (on at most :data:`~.calibrate.COARSE_SAMPLES` of them) and a bounded Brent refinement
(``scipy.optimize.minimize_scalar``). The uncertainty is a cluster-robust sandwich estimate plus a 2 % floor.

Manhattan estimate
------------------
Spatially correlated errors of the predicted normals bias the objective. A second estimate
(:mod:`.manhattan`) replaces each predicted normal that lies near an axis of the scene's dominant orthogonal
frame by that axis and minimises the same objective; :func:`self_calibrate` uses the plain estimate when its
image regions agree closely, else the Manhattan one when it is confident or confirmed, else falls back.

Surfaces that are fronto-parallel (``n0x = n0y = 0``) or parallel to the optical axis (``n0z = 0``) carry no
information; oblique surfaces (about 45 degrees to the optical axis) carry the most. When the scene has too
little such surface the objective is flat and :func:`self_calibrate` falls back to the assumed focal length
with a warning.
"""

from metrocli.geometry.selfcal.calibrate import (
    CHECK_FOCAL_TOLERANCE,
    SelfCalResult,
    calibrate_prediction,
    check_focal,
    self_calibrate,
)

__all__ = ["CHECK_FOCAL_TOLERANCE", "SelfCalResult", "calibrate_prediction", "check_focal", "self_calibrate"]

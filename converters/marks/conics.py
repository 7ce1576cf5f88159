"""Ellipse fitting: a direct least-squares conic fit, robust refits, distances and sampling.

The fit is Halir & Flusser's numerically stable version of Fitzgibbon's direct ellipse fit (always an
ellipse), on coordinates centred and scaled for conditioning. Distances are Sampson's first-order
approximation of the geometric distance, good to a fraction of a pixel near the curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from converters.marks.model import Array, Floats

FIT_POINTS = 600
"""Most points a fit uses (evenly spread over those given)."""


@dataclass(frozen=True)
class Ellipse:
    """Centre (cx, cy), semi-axes a >= b, angle (radians) of the a axis from +x, in pixels."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def grown(self, by: float) -> Ellipse:
        """The ellipse with both semi-axes longer by BY (negative: shorter; never below 0.5)."""
        return Ellipse(self.cx, self.cy, max(0.5, self.a + by), max(0.5, self.b + by), self.angle)

    def perimeter(self) -> float:
        """Ramanujan's approximation of the circumference."""
        a, b = self.a, self.b
        return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))

    def points(self, n: int) -> Floats:
        """N points evenly spaced in parameter around the ellipse, as an (n, 2) array of (x, y)."""
        t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        x = self.a * np.cos(t)
        y = self.b * np.sin(t)
        return np.stack([self.cx + x * ca - y * sa, self.cy + x * sa + y * ca], axis=1)

    def extent(self) -> tuple[float, float]:
        """Half-width and half-height of the axis-aligned box around the ellipse."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        return math.hypot(self.a * ca, self.b * sa), math.hypot(self.a * sa, self.b * ca)

    def distances(self, x: Floats, y: Floats) -> Floats:
        """Approximate distance of each point (x, y) from the curve."""
        q, grad = self._residual(x, y)
        return np.abs(q) / grad

    def _residual(self, x: Floats, y: Floats) -> tuple[Floats, Floats]:
        """Algebraic residual of the normalised equation and the norm of its gradient, per point."""
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        u = (dx * ca + dy * sa) / self.a
        v = (-dx * sa + dy * ca) / self.b
        gu, gv = 2 * u / self.a, 2 * v / self.b
        return u * u + v * v - 1.0, np.sqrt(gu * gu + gv * gv) + 1e-9

    def gradient_weights(self, x: Floats, y: Floats) -> Floats:
        """Per-point weights that turn an algebraic fit into an approximately geometric one (Sampson)."""
        _, grad = self._residual(x, y)
        w: Floats = 1.0 / (grad * grad)
        return w / float(w.mean())


def fit_ellipse(x: Floats, y: Floats, weights: Floats | None = None) -> Ellipse | None:
    """The least-squares ellipse through points (x, y), optionally weighted; None when they determine none."""
    if len(x) < 6:
        return None
    mx, my = float(x.mean()), float(y.mean())
    scale = float(max(x.std(), y.std()))
    if scale < 1e-6:
        return None
    xn, yn = (x - mx) / scale, (y - my) / scale
    design = np.empty((len(xn), 6))
    design[:, 0] = xn * xn
    design[:, 1] = xn * yn
    design[:, 2] = yn * yn
    design[:, 3] = xn
    design[:, 4] = yn
    design[:, 5] = 1.0
    if weights is not None:
        design *= np.sqrt(weights)[:, None]
    scatter = design.T @ design  # one product gives the three blocks
    s1, s2, s3 = scatter[:3, :3], scatter[:3, 3:], scatter[3:, 3:]
    try:
        t = -np.linalg.solve(s3, s2.T)
        m = s1 + s2 @ t
        m = np.array([m[2] / 2, -m[1], m[0] / 2])
        _, vecs = np.linalg.eig(m)
    except np.linalg.LinAlgError:
        return None
    vecs = np.real(vecs)
    cond = 4 * vecs[0] * vecs[2] - vecs[1] ** 2
    ok = np.flatnonzero(cond > 0)
    if len(ok) == 0:
        return None
    a1 = vecs[:, ok[0]]
    ellipse = _from_conic((*a1.tolist(), *(t @ a1).tolist()))
    if ellipse is None:
        return None
    return Ellipse(
        mx + ellipse.cx * scale, my + ellipse.cy * scale, ellipse.a * scale, ellipse.b * scale, ellipse.angle
    )


def _from_conic(c: tuple[float, ...]) -> Ellipse | None:
    """Geometric parameters of the conic A x^2 + B xy + C y^2 + D x + E y + F = 0 (closed form, plain floats)."""
    a, b, cc, d, e, f = c
    det = 4 * a * cc - b * b  # of twice the quadratic part
    if det == 0:
        return None
    x0 = (-2 * cc * d + b * e) / det
    y0 = (-2 * a * e + b * d) / det
    f0 = a * x0 * x0 + b * x0 * y0 + cc * y0 * y0 + d * x0 + e * y0 + f
    # eigenvalues of [[a, b/2], [b/2, cc]]
    mean, half = (a + cc) / 2, math.hypot((a - cc) / 2, b / 2)
    low, high = mean - half, mean + half
    if f0 == 0 or low == 0 or high == 0 or -f0 / low <= 0 or -f0 / high <= 0:
        return None
    major, minor = math.sqrt(-f0 / low), math.sqrt(-f0 / high)  # the smaller eigenvalue: the longer axis
    if major < minor:
        major, minor, low = minor, major, high
    # the eigenvector of `low` is the major axis' direction
    angle = math.atan2(low - a, b / 2) if abs(b) > 1e-12 else (0.0 if abs(a - low) <= abs(cc - low) else math.pi / 2)
    return Ellipse(x0, y0, major, minor, angle)


def robust_fit(x: Floats, y: Floats, tolerance: float, rounds: int = 3) -> tuple[Ellipse, Array] | None:
    """Fit, then refit on the points within TOLERANCE px (3x, then 2x, then 1x it), then once more weighted
    towards geometric distance (algebraic fits shrink long thin ellipses).

    At most FIT_POINTS evenly spread points are used for the fits. Returns the ellipse and the inlier flags of
    all the points, or None when no fit is possible.
    """
    step = max(1, len(x) // FIT_POINTS)
    sx, sy = x[::step], y[::step]
    keep: Array = np.ones(len(sx), bool)
    ellipse: Ellipse | None = None
    for k in range(rounds):
        ellipse = fit_ellipse(sx[keep], sy[keep])
        if ellipse is None:
            return None
        limit = tolerance * (3.0 if k == 0 else 2.0 if k == 1 else 1.0)
        new = ellipse.distances(sx, sy) <= limit
        if new.sum() < 6:
            return None
        keep = new
    assert ellipse is not None
    keep = ellipse.distances(sx, sy) <= 2.0 * tolerance
    if keep.sum() >= 6:
        better = fit_ellipse(sx[keep], sy[keep], ellipse.gradient_weights(sx[keep], sy[keep]))
        if better is not None:
            ellipse = better
    return ellipse, ellipse.distances(x, y) <= tolerance

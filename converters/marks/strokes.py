"""Straight horizontal and vertical stroke segments, found by line openings of the thin-stroke mask.

An opening with a 1 x L (or L x 1) line keeps exactly the pixels that lie on a horizontal (vertical) run of at
least L pixels, whatever else touches them, so a box side crossed by a chart line or broken by JPEG still
yields its pieces; collinear pieces are then merged across small gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from converters.marks.model import Array, Mask

MAX_STROKE = 13
"""Thickest stroke (mean pixels across) a segment may have."""


@dataclass(frozen=True)
class Segment:
    """A straight stroke: along-axis extent [start, end), across-axis extent [near, far), mean thickness."""

    horizontal: bool
    start: int
    end: int
    near: int
    far: int
    thickness: float

    @property
    def length(self) -> int:
        """Extent along the axis."""
        return self.end - self.start

    @property
    def centre(self) -> float:
        """Middle of the across-axis extent."""
        return (self.near + self.far) / 2.0


def find_segments(thin: Mask, crisp: Mask, horizontal: bool, min_length: int) -> list[Segment]:
    """Straight runs of at least MIN_LENGTH pixels in THIN along one axis, merged across small gaps.

    Runs whose pixels are mostly not CRISP (speckle in a noisy photo, the rim of a filled object) are skipped.
    """
    kernel = np.ones((1, min_length) if horizontal else (min_length, 1), np.uint8)
    lines = cv2.morphologyEx(thin, cv2.MORPH_OPEN, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    crisp_count = np.bincount(labels[crisp > 0], minlength=count)
    pieces: list[Segment] = []
    for i in np.flatnonzero(crisp_count >= 0.4 * stats[:, cv2.CC_STAT_AREA]):
        if i == 0:
            continue
        x, y, w, h, area = (int(v) for v in stats[i])
        along, across = (w, h) if horizontal else (h, w)
        thickness = area / along
        if across <= thickness + 4 and thickness <= MAX_STROKE:
            pieces.append(_segment(horizontal, (x, y, w, h), thickness))
        else:  # merged with something beside it: keep the densest band of rows (columns)
            pieces.extend(_split(labels[y : y + h, x : x + w] == i, horizontal, x, y, min_length))
    return merge_segments(pieces)


def _segment(horizontal: bool, box: tuple[int, int, int, int], thickness: float) -> Segment:
    x, y, w, h = box
    if horizontal:
        return Segment(True, x, x + w, y, y + h, thickness)
    return Segment(False, y, y + h, x, x + w, thickness)


def _split(mask: Array, horizontal: bool, x: int, y: int, min_length: int) -> list[Segment]:
    """The straight strokes in a component that merged with other content (a chart line, a crossing side).

    Rows (columns) holding at least half as many pixels as the fullest one form bands; within a band, the
    columns (rows) that are set in most of its rows are the stroke.
    """
    m = mask if horizontal else mask.T
    profile = m.sum(axis=1)
    full = profile >= max(min_length, 0.5 * float(profile.max()))
    out: list[Segment] = []
    idx = np.flatnonzero(full)
    if len(idx) == 0:
        return out
    for band_rows in np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1):
        i, j = int(band_rows[0]), int(band_rows[-1]) + 1
        if j - i > MAX_STROKE + 2:
            continue
        on = m[i:j].mean(axis=0) >= 0.5
        cols = np.flatnonzero(on)
        if len(cols) == 0:
            continue
        for run in np.split(cols, np.flatnonzero(np.diff(cols) > 2) + 1):
            start, end = int(run[0]), int(run[-1]) + 1
            if end - start < min_length:
                continue
            thickness = float(m[i:j, start:end].sum()) / (end - start)
            if horizontal:
                out.append(Segment(True, x + start, x + end, y + i, y + j, thickness))
            else:
                out.append(Segment(False, y + start, y + end, x + i, x + j, thickness))
    return out


def merge_segments(pieces: list[Segment]) -> list[Segment]:
    """Merge collinear pieces (same line within a pixel or two) separated by gaps up to ~3 strokes wide."""
    if not pieces:
        return []
    order = sorted(pieces, key=lambda s: (s.centre, s.start))
    merged: list[Segment] = []
    for seg in order:
        joined = False
        for k in range(len(merged) - 1, -1, -1):
            cur = merged[k]
            if seg.centre - cur.centre > 3.0 + 0.3 * max(seg.thickness, cur.thickness):
                break
            gap = max(seg.start, cur.start) - min(seg.end, cur.end)
            if gap <= max(8.0, 3.0 * max(seg.thickness, cur.thickness)):
                total = cur.length + seg.length
                merged[k] = Segment(
                    cur.horizontal,
                    min(cur.start, seg.start),
                    max(cur.end, seg.end),
                    min(cur.near, seg.near),
                    max(cur.far, seg.far),
                    (cur.thickness * cur.length + seg.thickness * seg.length) / total,
                )
                joined = True
                break
        if not joined:
            merged.append(seg)
    return merged

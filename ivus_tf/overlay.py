"""Contours of calcium, lumen and vessel drawn on a gray IVUS frame: the one renderer and colour table of the package.

Predicted regions are solid lines (calcium red, lumen yellow, vessel i.e. the external elastic membrane around
labels 1 | 2 cyan); true regions, when given, are dashed green on top, so both stay visible where they meet. The
predict command's overlays and TensorBoard's validation images come from `render_overlay`; the pullback report's
figures and legend use the same table (`COLOURS_HEX`).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from ivus_tf.core.vocab import CALCIUM, LUMEN, WALL_LUMEN, check_task

COLOURS = {"truth": (0, 255, 0), "calcium": (255, 0, 0), "lumen": (255, 255, 0), "vessel": (0, 255, 255),
           "superficial": (255, 152, 0)}  # RGB; superficial calcium and lesions in the pullback report
COLOURS_HEX = {region: "#{:02x}{:02x}{:02x}".format(*rgb) for region, rgb in COLOURS.items()}  # for matplotlib, HTML
DASH_PX = (3, 2)  # pixels on, pixels off along a true contour
LEGEND = {CALCIUM: "green dashed: true calcium; red: predicted calcium",
          WALL_LUMEN: "green dashed: true lumen and vessel (EEM); yellow: predicted lumen; cyan: predicted vessel"}


def regions(task: str, labels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """[(region, bool mask)] drawn for a task's mask: calcium (nonzero); or the vessel (labels != 0) and the lumen."""
    labels = np.asarray(labels)
    if check_task(task) == CALCIUM:
        return [("calcium", labels != 0)]
    return [("vessel", labels != 0), ("lumen", labels == LUMEN)]


def _contours(mask: np.ndarray) -> list[np.ndarray]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return list(found)


def _gray_uint8(image: np.ndarray) -> np.ndarray:
    gray = np.asarray(image)
    gray = gray[..., 0] if gray.ndim == 3 else gray
    if gray.dtype != np.uint8:  # float frames in [0, 1], as the pipeline feeds them
        gray = np.clip(np.round(gray * 255.0), 0, 255).astype(np.uint8)
    return gray


def render_overlay(image: np.ndarray, predicted: Mapping[str, np.ndarray | None],
                   truth: Mapping[str, np.ndarray | None] | None = None, center_rc: tuple[float, float] | None = None,
                   text: str = "", legend: bool = False) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the gray `image` (uint8, or float in [0, 1]; [H, W] or [H, W, 1]) with the contours of
    `predicted` {task: label map or None}, dashed true contours of `truth` {task: label map or None}, a white
    cross at `center_rc` (the calcium arc's viewpoint), and on frames of at least 200 pixels `text` top left and,
    with `legend`, the region names in their colours bottom left. Lines are 1 pixel up to ~375-pixel frames and
    scale with larger ones."""
    gray = _gray_uint8(image)
    canvas = np.repeat(gray[..., None], 3, axis=-1)
    scale = min(gray.shape) / 500.0
    thickness = max(1, round(2 * scale))
    line = cv2.LINE_AA if thickness > 1 else cv2.LINE_8  # a 1-pixel antialiased line has no pixel of its colour
    drawn = []
    for task, labels in predicted.items():
        if labels is None:
            continue
        for region, mask in regions(task, labels):
            cv2.drawContours(canvas, _contours(mask), -1, COLOURS[region], thickness, line)
            drawn.append(region)
    for task, labels in (truth or {}).items():
        if labels is None:
            continue
        for _, mask in regions(task, labels):
            for points in _contours(mask):
                points = points[:, 0, :]  # (x, y), every contour pixel
                on = np.arange(len(points)) % sum(DASH_PX) < DASH_PX[0]
                canvas[points[on, 1], points[on, 0]] = COLOURS["truth"]
    if center_rc is not None:
        arm = max(2, round(6 * scale))
        cv2.drawMarker(canvas, (round(center_rc[1]), round(center_rc[0])), (255, 255, 255), cv2.MARKER_CROSS,
                       2 * arm, max(1, thickness // 2), line)
    if min(gray.shape) < 200:
        return canvas
    font_scale, pad = max(0.4, 0.45 * scale), round(8 * scale)
    labelled = [(text, (255, 255, 255), (pad, round(20 * scale)))] if text else []
    if legend:
        x = pad
        for region in ("calcium", "lumen", "vessel"):
            if region in drawn:
                labelled.append((region, COLOURS[region], (x, gray.shape[0] - pad)))
                x += round((len(region) + 2) * 20 * font_scale)
    for words, colour, (x, y) in labelled:  # on a black box: readable over bright tissue
        (width, height), baseline = cv2.getTextSize(words, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        cv2.rectangle(canvas, (x - 2, y - height - 2), (x + width + 2, y + baseline), (0, 0, 0), cv2.FILLED)
        cv2.putText(canvas, words, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, 1, cv2.LINE_AA)
    return canvas

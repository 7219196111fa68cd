"""Phantom display: echo in dB on the A-lines -> the uint8 frame a scanner shows or exports.

Log-compressed echo is mapped to gray the way consoles do it, with the case's settings: `dynamic_range_db` from
black to white, placed by `gain_db` (0: soft plaque in the near field at mid-range), a reject level (weak echoes
shown black) and a display gamma (vendors' colour maps seen in gray are such curves). The catheter centre is
black; a masked ring-down is a black disc. Scan conversion puts the catheter at the image centre; the field of view
is a disc with black corners or fills the square. Then the console's post-processing: smoothing, sharpening
(unsharp mask), and the JPEG compression of many exports.
"""

from __future__ import annotations

import cv2
import numpy as np

from tfrecords_builder.phantom.acoustics import transducer_radius_mm
from tfrecords_builder.phantom.scanner import Scanner, pixel_grid_mm, scan_maps


def to_gray(echo_db: np.ndarray, scanner: Scanner, depth: np.ndarray) -> np.ndarray:
    """Polar gray levels (float32, 0-255) of the echo (dB) on the A-lines."""
    black = -0.5 * scanner.dynamic_range_db - scanner.gain_db  # echo levels are dB re soft plaque
    u = np.clip((echo_db - black) / scanner.dynamic_range_db, 0, 1)
    u = np.clip((u - scanner.display_reject) / (1 - scanner.display_reject), 0, 1)
    gray = (255 * u ** scanner.display_gamma).astype(np.float32)
    centre = scanner.mask_radius_mm if scanner.catheter_look == "masked" else transducer_radius_mm(scanner)
    gray[:, depth < centre] = 0
    return gray


def scan_convert(gray: np.ndarray, scanner: Scanner) -> np.ndarray:
    """Cartesian frame (float32) from polar gray levels; black outside the field-of-view disc unless square."""
    padded = np.concatenate([gray, gray[:1]], axis=0)  # wrap the seam at angle 0
    map1, map2 = scan_maps(scanner.image_size, scanner.pixel_spacing_mm, scanner.a_lines)
    image = cv2.remap(padded, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if not scanner.square_fov:
        x_mm, y_mm = pixel_grid_mm(scanner.image_size, scanner.pixel_spacing_mm)
        image[np.hypot(x_mm, y_mm) > scanner.field_of_view_mm / 2] = 0
    return image


def scan_convert_mask(mask: np.ndarray, scanner: Scanner) -> np.ndarray:
    """A boolean mask on the A-lines, scan-converted (nearest sample) to the frame."""
    padded = np.concatenate([mask, mask[:1]], axis=0).astype(np.uint8)
    map1, map2 = scan_maps(scanner.image_size, scanner.pixel_spacing_mm, scanner.a_lines)
    return cv2.remap(padded, map1, map2, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0


def post_process(image: np.ndarray, scanner: Scanner) -> np.ndarray:
    """Console smoothing and sharpening, then uint8 (and a JPEG round trip where the case's export uses one)."""
    if scanner.smoothing_px > 0.2:
        image = cv2.GaussianBlur(image, (0, 0), scanner.smoothing_px)
    if scanner.sharpening > 0.05:
        image = image + scanner.sharpening * (image - cv2.GaussianBlur(image, (0, 0), 1.5))
    out = np.clip(np.round(image), 0, 255).astype(np.uint8)
    if scanner.jpeg_quality:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, scanner.jpeg_quality])
        out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    return out


def render_image(echo_db: np.ndarray, scanner: Scanner, depth: np.ndarray) -> np.ndarray:
    """The displayed frame (uint8, image_size x image_size) of the echo (dB) on the A-lines."""
    return post_process(scan_convert(to_gray(echo_db, scanner, depth), scanner), scanner)

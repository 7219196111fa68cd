"""One case, end to end: anatomy + scanner + annotator -> frames with their labels.

Random streams are keyed by (seed, case index[, frame index]) and split by purpose (anatomy, scanner,
annotation), so a dataset is deterministic for a seed whatever the number of worker processes, case k is the
same in a 5-case and a 50-case dataset, and a case's anatomy does not depend on the scanner knobs (the `shifted`
preset images the same vessels as `randomized`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfrecords_builder.phantom import acoustics, anatomy, display, labels
from tfrecords_builder.phantom.config import PhantomConfig
from tfrecords_builder.phantom.scanner import Scanner, label_grid_mm, polar_grid, sample_scanner

_SCANNER_STREAM, _ANNOTATION_STREAM = 1, 2


def _stream(key, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key), spawn_key=(purpose,)))


@dataclass
class PhantomCase:
    """A pullback ready to render: its anatomy, scanner and annotator, and the scanner's sampling grids."""

    seed: int
    index: int
    frames: int
    case: anatomy.Case
    scanner: Scanner
    annotator: labels.Annotator
    grid: tuple
    label_xy: tuple

    def z_mm(self, frame_index: int) -> float:
        return self.case.length_mm * frame_index / max(self.frames - 1, 1)

    def describe(self) -> dict:
        """What this case's frames were rendered with (JSON-ready): scanner, tissue echo levels, annotator."""
        return {"scanner": self.scanner.describe(),
                "tissue": {k: round(v, 4) for k, v in self.case.acoustics.items()},
                "annotator": {k: round(v, 4) for k, v in vars(self.annotator).items()},
                "stent": self.case.stent is not None, "guidewire": self.case.guidewire is not None}


def sample_phantom_case(config: PhantomConfig, seed: int, case_index: int, frames: int) -> PhantomCase:
    scanner = sample_scanner(config, _stream((seed, case_index), _SCANNER_STREAM))
    case = anatomy.sample_case(config, np.random.default_rng([seed, case_index]), frames,
                               catheter_radius_mm=scanner.catheter_radius_mm)
    annotator = labels.sample_annotator(config, _stream((seed, case_index), _ANNOTATION_STREAM))
    return PhantomCase(seed, case_index, frames, case, scanner, annotator, polar_grid(scanner), label_grid_mm(scanner))


def render_frame(pc: PhantomCase, frame_index: int):
    """(frame anatomy, image uint8, calcium bool mask, wall_lumen label map) of one frame."""
    rng = np.random.default_rng([pc.seed, pc.index, frame_index])
    anat = anatomy.frame_anatomy(pc.case, pc.z_mm(frame_index), rng)
    echo_db, hidden = acoustics.render_polar(anat, pc.case.acoustics, pc.scanner, pc.grid, rng)
    image = display.render_image(echo_db, pc.scanner, pc.grid[3])
    drawn = labels.draw(anat, pc.annotator, _stream((pc.seed, pc.index, frame_index), _ANNOTATION_STREAM),
                        blur_mm=2.355 * pc.scanner.axial_psf_sigma_mm)
    calcium, wall_lumen = labels.masks(anat, *pc.label_xy, drawn)
    if hidden.any():  # calcium in another calcification's shadow is invisible: nobody outlines it
        calcium &= ~display.scan_convert_mask(hidden, pc.scanner)
    return anat, image, calcium, wall_lumen


def render_case_frames(config: PhantomConfig, seed: int, case_index: int, frames: int):
    """Yield (frame_index, z_mm, image, calcium bool mask, wall_lumen label map) for one pullback.

    The frames' pixel spacing is the case's: `sample_phantom_case(...).scanner.pixel_spacing_mm`.
    """
    pc = sample_phantom_case(config, seed, case_index, frames)
    for i in range(frames):
        _, image, calcium, wall_lumen = render_frame(pc, i)
        yield i, pc.z_mm(i), image, calcium, wall_lumen

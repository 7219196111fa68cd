"""A realistic IVUS phantom: the embedded default dataset and test bed (no public calcium-labelled IVUS exists).

`anatomy` draws pullbacks and says which tissue lies where, `scanner` draws how each case is imaged (domain
randomisation over scanners), `acoustics` and `display` turn anatomy into B-mode frames, `labels` draws the
ground truth as annotators do, `render` ties one case together, `generate` writes a dataset in the manifest
layout, `config` holds the knobs and presets.
"""

from tfrecords_builder.phantom.config import HELD_OUT_PRESETS, PRESETS, TRAINING_PRESETS, PhantomConfig
from tfrecords_builder.phantom.generate import generate_dataset
from tfrecords_builder.phantom.render import render_case_frames, render_frame, sample_phantom_case

__all__ = ["HELD_OUT_PRESETS", "PRESETS", "TRAINING_PRESETS", "PhantomConfig", "generate_dataset",
           "render_case_frames", "render_frame", "sample_phantom_case"]

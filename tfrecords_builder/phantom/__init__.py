"""A realistic IVUS phantom: the embedded default dataset and test bed (no public calcium-labelled IVUS exists).

`anatomy` draws pullbacks and says which tissue lies where, `acoustics` turns that into B-mode frames,
`generate` writes a dataset in the manifest layout, `config` holds the knobs and presets.
"""

from tfrecords_builder.phantom.config import PRESETS, PhantomConfig
from tfrecords_builder.phantom.generate import generate_dataset, render_case_frames

__all__ = ["PRESETS", "PhantomConfig", "generate_dataset", "render_case_frames"]

"""The pullback report: from per-frame masks to lengths, lesions, the IVUS calcium score and one readable page.

Stages, each a small module over plain numbers and arrays (no TensorFlow):
- `geometry`: where each frame lies along the pullback (mm), from the DICOM timing tags or the command line, and
  which source each number came from;
- `lesions`: contiguous calcified segments along the pullback, small gaps bridged;
- `calcium_score`: superficial calcium per frame and the IVUS calcium score of Zhang et al. (2021) per lesion;
- `collect`: what `predict` keeps per frame while the pullback streams (a few numbers, one line of pixels per
  L-mode angle, the worst frames so far) - memory does not hold the frames;
- `lmode` and `views`: the figures (L-mode, profiles along the pullback, worst frames with scale bars);
- `assemble` and `report_html`: report.json and the self-contained report.html;
- `dicom_seg`: the masks as a DICOM Segmentation object referencing the source frames.

See docs/pullback_report.md for the definitions, thresholds and their sources.
"""

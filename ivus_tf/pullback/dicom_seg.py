"""The predicted masks as a DICOM Segmentation object (SEG) referencing the source pullback's frames.

Three BINARY segments (those the model gives): 1 calcium (SCT 29483008 "calcified atheromatous plaque"), 2 lumen
(SCT 91747007 "lumen of blood vessel"), 3 vessel, the area inside the external elastic membrane (SCT 59820001
"blood vessel"); they overlap, as the masks do. Each SEG frame holds one segment of one source frame and references
that frame (Derivation Image Sequence: the source SOP Instance UID and Referenced Frame Number), which is how a
viewer places it on an image without a Frame of Reference, as IVUS pullbacks usually are. Frames where a segment is
empty are left out. The SEG joins the source's patient and study, in a new series.

highdicom (0.28) builds segmentations of a multi-frame image only when it has a Frame of Reference
(highdicom issue #284), so the SEG is built in two steps: highdicom writes a complete one-frame SEG of the source
seen as a single-frame ultrasound image (segments, codes, algorithm, equipment, patient and study modules), then
its per-frame functional groups are repeated for every (segment, source frame) with the true source class and frame
number, with a second dimension (Temporal Position Index = the source frame number) beside the segment number.
While the pullback streams, the masks go bit-packed into scratch files (at most 3 bits per pixel per frame on disk,
nothing in memory); the pixel data is copied from them straight into the SEG file after its header.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ivus_tf.core.errors import InputError
from ivus_tf.core.version import __version__
from ivus_tf.core.vocab import LUMEN, VESSEL_WALL

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
TYPE2_DEFAULTS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                  "AccessionNumber", "ReferringPhysicianName")
SEGMENTS = (("calcium", "Calcium", "MorphologicallyAbnormalStructure", "CalcifiedAtheromatousPlaque"),
            ("lumen", "Lumen", "AnatomicalStructure", "LumenOfBloodVessel"),
            ("vessel", "Vessel (inside the EEM)", "AnatomicalStructure", "BloodVessel"))
CHUNK_BYTES = 1 << 22


def segment_masks(calcium, labels) -> dict:
    """{segment name: bool mask} of the masks a frame has."""
    masks = {}
    if calcium is not None:
        masks["calcium"] = np.asarray(calcium) != 0
    if labels is not None:
        masks["lumen"] = labels == LUMEN
        masks["vessel"] = (labels == LUMEN) | (labels == VESSEL_WALL)
    return masks


class DicomSegWriter:
    """Collect masks frame by frame (`add`), then `write` the SEG of `source_path` (a multi-frame DICOM)."""

    def __init__(self, source_path: Path, frames: int, tasks: Sequence[str], scratch: Path):
        import pydicom

        self.source_path = Path(source_path)
        self.header = pydicom.dcmread(self.source_path, stop_before_pixels=True)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
            if not str(self.header.get(keyword, "") or ""):
                raise InputError(f"{self.source_path}: no {keyword} in the DICOM file; a DICOM Segmentation must "
                                 "reference its source instance, series and study")
        self.frames = int(frames)
        self.rows, self.columns = int(self.header.Rows), int(self.header.Columns)
        names = (["calcium"] if "calcium" in tasks else []) + (["lumen", "vessel"] if "wall_lumen" in tasks else [])
        self.segments = [segment for segment in SEGMENTS if segment[0] in names]
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.files = {name: open(self.scratch / f"{name}.bits", "wb") for name, *_ in self.segments}
        self.nonempty: dict[str, list[int]] = {name: [] for name, *_ in self.segments}
        self.count = 0

    def add(self, calcium, labels) -> None:
        """The next source frame's masks (calcium 0/1, labels 0/1/2; None for a missing head)."""
        for name, mask in segment_masks(calcium, labels).items():
            if name in self.files and mask.any():
                if mask.shape != (self.rows, self.columns):
                    raise InputError(f"{self.source_path}: mask of frame {self.count} is {mask.shape}, the source "
                                     f"frames are {(self.rows, self.columns)}")
                self.files[name].write(np.packbits(mask.reshape(-1), bitorder="little").tobytes())
                self.nonempty[name].append(self.count)
        self.count += 1

    def _template(self, descriptions):
        import highdicom as hd
        from pydicom.uid import generate_uid

        single = copy.deepcopy(self.header)
        single.SOPClassUID = US_IMAGE_STORAGE  # seen as one frame: highdicom's no-Frame-of-Reference path
        for keyword in ("NumberOfFrames", "FrameIncrementPointer", "FrameTime", "FrameTimeVector"):
            if keyword in single:
                delattr(single, keyword)
        for keyword in TYPE2_DEFAULTS:  # Type 2: present, may be empty
            if keyword not in single:
                setattr(single, keyword, "")
        pixels = np.ones((1, self.rows, self.columns, len(self.segments)), bool)
        return hd.seg.Segmentation(
            source_images=[single], pixel_array=pixels, segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=9100,
            sop_instance_uid=generate_uid(), instance_number=1, manufacturer="ivus-tf",
            manufacturer_model_name="ivus-tf predict", software_versions=__version__, device_serial_number="n/a",
            series_description="ivus-tf segmentation", content_label="IVUS_TF",
            content_description="calcium, lumen and vessel masks predicted by ivus-tf", omit_empty_frames=False)

    def _descriptions(self):
        import highdicom as hd
        from pydicom.sr.codedict import codes

        algorithm = hd.AlgorithmIdentificationSequence(name="ivus-tf", version=__version__,
                                                       family=codes.cid7162.ArtificialIntelligence)
        return [hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=getattr(codes.SCT, category),
            segmented_property_type=getattr(codes.SCT, kind), algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm, anatomic_regions=[codes.SCT.CoronaryArtery])
            for number, (_, label, category, kind) in enumerate(self.segments, 1)]

    def write(self, path: Path) -> dict:
        """Write the SEG to `path`; return {"path", "frames", "segments"}."""
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence as DicomSequence
        from pydicom.tag import Tag

        for handle in self.files.values():
            handle.close()
        if self.count != self.frames:
            raise InputError(f"{self.source_path}: {self.count} frames segmented, the source has {self.frames}")
        seg = self._template(self._descriptions())
        true_class = self.header.SOPClassUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
            item.ReferencedSOPClassUID = true_class
        for item in seg.get("SourceImageSequence", []):
            item.ReferencedSOPClassUID = true_class
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared:  # without a Frame of Reference the frames align 1:1 with the source's
            del shared.PixelMeasuresSequence  # (and highdicom 0.28 cannot read it back without a SliceThickness)
        per_segment = list(seg.PerFrameFunctionalGroupsSequence)
        items = []
        for number, (name, *_) in enumerate(self.segments, 1):
            for frame in self.nonempty[name]:
                item = copy.deepcopy(per_segment[number - 1])
                source = item.DerivationImageSequence[0].SourceImageSequence[0]
                source.ReferencedSOPClassUID = true_class
                source.ReferencedFrameNumber = frame + 1
                content = item.FrameContentSequence[0]
                content.DimensionIndexValues = [number, frame + 1]
                content.TemporalPositionIndex = frame + 1
                items.append(item)
        dimension = Dataset()
        dimension.DimensionOrganizationUID = seg.DimensionIndexSequence[0].DimensionOrganizationUID
        dimension.DimensionIndexPointer = Tag("TemporalPositionIndex")
        dimension.FunctionalGroupPointer = Tag("FrameContentSequence")
        dimension.DimensionDescriptionLabel = "Source frame number"
        seg.DimensionIndexSequence.append(dimension)
        seg.PerFrameFunctionalGroupsSequence = DicomSequence(items)
        seg.NumberOfFrames = len(items)
        del seg.PixelData
        path = Path(path)
        seg.save_as(path, enforce_file_format=True)
        self._append_pixel_data(path)
        return {"path": path.name, "frames": len(items), "segments": [label for _, label, *_ in self.segments],
                "sop_instance_uid": str(seg.SOPInstanceUID), "series_instance_uid": str(seg.SeriesInstanceUID)}

    def _append_pixel_data(self, path: Path) -> None:
        """Append (7FE0,0010) OB with every segment's packed frames, bits contiguous across frames (BINARY SEG)."""
        bits_per_frame = self.rows * self.columns
        frame_bytes = (bits_per_frame + 7) // 8
        total_bits = bits_per_frame * sum(len(frames) for frames in self.nonempty.values())
        length = (total_bits + 7) // 8
        with open(path, "ab") as out:
            out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, length + length % 2))
            carry = np.zeros(0, np.uint8)
            for name, *_ in self.segments:
                with open(self.scratch / f"{name}.bits", "rb") as handle:
                    while chunk := handle.read(max(frame_bytes, CHUNK_BYTES // frame_bytes * frame_bytes)):
                        if bits_per_frame % 8 == 0:
                            out.write(chunk)
                            continue
                        packed = np.frombuffer(chunk, np.uint8).reshape(-1, frame_bytes)
                        bits = np.unpackbits(packed, axis=1, bitorder="little")[:, :bits_per_frame].reshape(-1)
                        bits = np.concatenate([carry, bits])
                        whole = len(bits) // 8 * 8
                        out.write(np.packbits(bits[:whole], bitorder="little").tobytes())
                        carry = bits[whole:]
            if len(carry):
                out.write(np.packbits(carry, bitorder="little").tobytes())
            if length % 2:
                out.write(b"\0")

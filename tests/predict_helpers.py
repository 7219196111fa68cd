"""Helpers of the predict tests: DICOM files written with pydicom, frames of known geometry, a fake exported model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# intensity codes of `geometry_frame`, which `FakeModel` segments back by thresholds
BACKGROUND, LUMEN, WALL, CALCIUM = 170, 20, 100, 250


def geometry_frame(size=(96, 96), center=(48.0, 48.0), lumen_r=14, vessel_r=34, calcium=(18, 28, 0, 90)):
    """A frame whose lumen disc, vessel disc and calcium sector (r_in, r_out, start_deg, stop_deg) are known.

    Returns (image uint8, calcium bool, wall_lumen labels uint8), the last two as the fake model will find them.
    """
    rows, cols = np.mgrid[:size[0], :size[1]]
    radius = np.hypot(rows - center[0], cols - center[1])
    angle = np.degrees(np.arctan2(rows - center[0], cols - center[1])) % 360
    labels = np.zeros(size, np.uint8)
    labels[radius < vessel_r] = 2
    labels[radius < lumen_r] = 1
    calcium_mask = np.zeros(size, bool)
    if calcium is not None:
        r_in, r_out, start, stop = calcium
        span = (stop - start) % 360 or 360
        calcium_mask = (radius >= r_in) & (radius < r_out) & (((angle - start) % 360) <= span) & (labels == 2)
    image = np.full(size, BACKGROUND, np.uint8)
    image[labels == 2] = WALL
    image[labels == 1] = LUMEN
    image[calcium_mask] = CALCIUM
    return image, calcium_mask, labels


class FakeModel:
    """An ExportedModel stand-in: segments `geometry_frame` images by intensity; records the batches it saw."""

    engine = "tensorflow"
    info = {"fake": True}

    def __init__(self, tasks=("calcium", "wall_lumen"), on_predict=None):
        self.tasks = tuple(tasks)
        self.batch_shapes: list[tuple] = []
        self.on_predict = on_predict

    def predict(self, frames: np.ndarray, batch_size: int = 8) -> dict:
        assert frames.dtype == np.uint8 and frames.ndim == 3
        self.batch_shapes.append(frames.shape)
        if self.on_predict is not None:
            self.on_predict(frames)
        outputs = {}
        if "calcium" in self.tasks:
            outputs["calcium_mask"] = (frames >= 200).astype(np.uint8)
            outputs["calcium_probability"] = outputs["calcium_mask"].astype(np.float32)
        if "wall_lumen" in self.tasks:
            labels = np.zeros(frames.shape, np.uint8)
            labels[(frames >= 50) & (frames < 150) | (frames >= 200)] = 2
            labels[frames < 50] = 1
            outputs["wall_lumen_labels"] = labels
            outputs["wall_lumen_probability"] = np.eye(3, dtype=np.float32)[labels]
        return outputs


def tiny_export(out_dir: Path, seed: int = 0, tasks=("calcium", "wall_lumen"), onnx: bool = True,
                size: int = 32, logit_std: float = 3.0, after=None) -> Path:
    """A tiny U-Net (width 1/16, `size` x `size` input) exported to `out_dir`/1, with model.onnx when `onnx` and
    the ONNX tools are installed; returns the version folder. Each head's logits are rescaled to a spread of
    `logit_std` on `geometry_frame`-like input, so the untrained model gives decisive, spatially varying
    probabilities (its own are all near 1 / classes) and mask comparisons mean something. `after`: the
    exporters' hook (`ivus_tf.export.reduced.add_precisions`)."""
    import importlib.util

    import keras

    from ivus_tf.export import export_onnx, export_savedmodel
    from ivus_tf.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model("unet_res", tuple(tasks), input_shape=(size, size, 1), width=0.0625)
    images = np.stack([cv2.resize(geometry_frame(calcium=(18, 28, 40 * i, 40 * i + 120))[0], (size, size))
                       for i in range(3)])[..., None].astype(np.float32) / 255.0
    for task, p in model.predict(images, verbose=0).items():
        log_p = np.log(np.maximum(p, 1e-12))
        centred = log_p - log_p.mean(-1, keepdims=True)  # the logits up to a per-pixel constant
        factor = logit_std / float(centred.std())
        layer = model.get_layer(f"{task}_head_logits")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * factor, (bias - centred.reshape(-1, p.shape[-1]).mean(0)) * factor])
    have_onnx = all(importlib.util.find_spec(m) for m in ("tf2onnx", "onnx", "onnxruntime"))
    return (export_onnx if onnx and have_onnx else export_savedmodel)(model, out_dir, version=1, after=after)


def write_image_folder(folder: Path, frames, names=None, suffix=".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        name = names[i] if names else f"frame{i}"
        assert cv2.imwrite(str(folder / f"{name}{suffix}"), frame)
    return folder


def write_dicom(path: Path, frames: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 8,
                pixel_spacing_mm=None, region_delta_cm=None, region_units: int = 3, frame_time_ms=None,
                jpeg: bool = False, extra: dict | None = None) -> Path:
    """A multi-frame Ultrasound Multi-frame Image with pydicom: native pixel data, or JPEG baseline per frame.

    `region_delta_cm`: (PhysicalDeltaX, PhysicalDeltaY) of one SequenceOfUltrasoundRegions item, in cm;
    `extra`: more attributes by keyword (e.g. IVUSPullbackRate, StudyInstanceUID).
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "IVUS"
    if jpeg:
        meta.TransferSyntaxUID = JPEGBaseline8Bit
        colour = frames.ndim == 4
        ds.Rows, ds.Columns = frames.shape[1:3]
        ds.SamplesPerPixel = 3 if colour else 1
        ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
        if colour:
            ds.PlanarConfiguration = 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.NumberOfFrames = len(frames)
        encoded = [cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR) if colour else f,
                                [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes() for f in frames]
        ds.PixelData = encapsulate(encoded)
        ds["PixelData"].VR = "OB"
    else:
        ds.set_pixel_data(frames, photometric, bits_stored)
        if len(frames) == 1:
            ds.NumberOfFrames = 1
    if pixel_spacing_mm is not None:
        ds.PixelSpacing = list(pixel_spacing_mm) if np.ndim(pixel_spacing_mm) else [pixel_spacing_mm] * 2
    if region_delta_cm is not None:
        region = Dataset()
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = region_units
        region.PhysicalDeltaX, region.PhysicalDeltaY = region_delta_cm
        ds.SequenceOfUltrasoundRegions = [region]
    if frame_time_ms is not None:
        ds.FrameTime = frame_time_ms
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def calcium_pullback(frames: int, segments=(), size: int = 128, lumen_r: float = 25, vessel_r: float = 50,
                     calcium_r=(27, 33)):
    """Gray frames of a pullback whose calcium is known: `segments` are (first, last, start_deg, stop_deg), frames
    first..last (inclusive) with a calcium sector from start to stop degrees just outside the lumen (superficial:
    2 pixels from the lumen border). At 0.04 mm per pixel: lumen 1 mm and vessel 2 mm in radius (EEM 4 mm across).
    Returns (images, calcium masks, label maps) as the fake model segments them."""
    images, calcium, labels = [], [], []
    for i in range(frames):
        sector = next(((*calcium_r, start, stop) for first, last, start, stop in segments if first <= i <= last), None)
        image, mask, label = geometry_frame(size=(size, size), center=(size / 2, size / 2), lumen_r=lumen_r,
                                            vessel_r=vessel_r, calcium=sector)
        images.append(image)
        calcium.append(mask)
        labels.append(label)
    return images, calcium, labels

"""Pullback geometry: DICOM timing and IVUS tags, flags overriding them, positions and slabs, the refusal line."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from ivus_tf.core.errors import InputError
from ivus_tf.pullback.geometry import DicomTiming, dicom_timing, require_lengths, resolve_geometry


def dataset(**attributes) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_frame_rate_sources_in_order():
    assert dicom_timing(dataset(FrameTime=33.3333, CineRate=25), 10).frame_rate_source == "DICOM FrameTime"
    timing = dicom_timing(dataset(CineRate=25, RecommendedDisplayFrameRate=12), 10)
    assert (timing.frame_rate_hz, timing.frame_rate_source, timing.notes) == (25.0, "DICOM CineRate", ())
    timing = dicom_timing(dataset(RecommendedDisplayFrameRate=12), 10)
    assert timing.frame_rate_hz == 12.0 and "display setting" in timing.notes[0]
    assert dicom_timing(dataset(), 10).frame_rate_hz is None


def test_frame_time_vector_gives_exact_frame_times():
    timing = dicom_timing(dataset(FrameTimeVector=[0, 40, 40, 80, 40], FrameTime=40), 5)
    assert timing.frame_rate_source == "DICOM FrameTimeVector" and timing.frame_rate_hz == pytest.approx(25.0)
    np.testing.assert_allclose(timing.frame_times_s, [0, 0.04, 0.08, 0.16, 0.2])
    geometry = resolve_geometry(5, pullback_speed_mm_s=0.5, timing=timing)
    np.testing.assert_allclose(geometry.positions_mm, [0, 0.02, 0.04, 0.08, 0.10])
    np.testing.assert_allclose(geometry.slabs_mm, [0.02, 0.02, 0.04, 0.02, 0.02])  # last: nominal 0.5 / 25
    assert geometry.run_length_mm(1, 3) == pytest.approx(0.08)
    # a vector of the wrong length is ignored with a note; FrameTime takes over
    timing = dicom_timing(dataset(FrameTimeVector=[0, 40, 40], FrameTime=40), 5)
    assert timing.frame_rate_source == "DICOM FrameTime" and "3 values for 5 frames" in timing.notes[0]


def test_ivus_pullback_rate_and_flags_override():
    timing = dicom_timing(dataset(FrameTime=33.3333333, IVUSAcquisition="MOTOR_PULLBACK", IVUSPullbackRate=0.5), 300)
    geometry = resolve_geometry(300, timing=timing)
    assert (geometry.pullback_speed_source, geometry.frame_rate_source) == ("DICOM IVUSPullbackRate",
                                                                             "DICOM FrameTime")
    assert geometry.frame_interval_mm == pytest.approx(0.5 / 30)
    assert geometry.position_mm(299) == pytest.approx(299 * 0.5 / 30)
    assert geometry.run_length_mm(0, 299) == pytest.approx(5.0)
    assert "DICOM IVUSPullbackRate" in geometry.position_source and "DICOM FrameTime" in geometry.position_source
    flagged = resolve_geometry(300, pullback_speed_mm_s=1.0, frame_rate_hz=10, timing=timing)
    assert (flagged.pullback_speed_source, flagged.frame_rate_source) == ("--pullback-speed-mm-s", "--frame-rate-hz")
    assert flagged.frame_interval_mm == pytest.approx(0.1)
    assert flagged.to_json()["pullback_length_mm"] == pytest.approx(30.0)


def test_gated_pullback_and_start_stop_frames():
    timing = dicom_timing(dataset(IVUSAcquisition="GATED_PULLBACK", IVUSGatedRate=0.5), 6)
    geometry = resolve_geometry(6, timing=timing)
    assert geometry.gated and geometry.frame_interval_mm == 0.5 and "IVUSGatedRate" in geometry.position_source
    np.testing.assert_allclose(geometry.positions_mm, [0, 0.5, 1.0, 1.5, 2.0, 2.5])
    timing = dicom_timing(dataset(FrameTime=100, IVUSPullbackRate=1.0, IVUSPullbackStartFrameNumber=3,
                                  IVUSPullbackStopFrameNumber=5), 7)
    geometry = resolve_geometry(7, timing=timing)
    assert geometry.pullback_frame_range == (2, 4)
    np.testing.assert_allclose(geometry.slabs_mm, [0, 0, 0.1, 0.1, 0.1, 0, 0])
    np.testing.assert_allclose(geometry.positions_mm, [0, 0, 0, 0.1, 0.2, 0.3, 0.3])
    bad = dicom_timing(dataset(IVUSPullbackRate="-0.5", FrameTime=-3), 4)
    assert bad.pullback_speed_mm_s is None and bad.frame_rate_hz is None and len(bad.notes) == 2


def test_no_lengths_refused_with_one_line_naming_the_missing_flags():
    geometry = resolve_geometry(10, frame_rate_hz=30)
    assert not geometry.has_lengths and geometry.positions_mm is None
    with pytest.raises(InputError) as error:
        require_lengths(geometry, "--report", "pb.dcm")
    message = str(error.value)
    assert "\n" not in message and "--pullback-speed-mm-s" in message and "--frame-rate-hz" not in message
    with pytest.raises(InputError, match="--pullback-speed-mm-s .* and --frame-rate-hz"):
        require_lengths(resolve_geometry(10, timing=DicomTiming()), "--report", "folder")

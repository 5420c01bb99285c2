"""Synthetic DICOM MR instances and series for tests, written with pydicom.

Every instance carries made-up patient data (PHI below) so that tests can check that none of it
reaches a verdict, a CSV line or a log line.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="pydicom not installed: pip install -e '.[dicom]'")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.uid import (  # noqa: E402
    ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, MRImageStorage, RLELossless,
    generate_uid)

PHI = {
    "PatientName": "Doe^Jane^Quinn",
    "PatientID": "PID-58213-XQ",
    "PatientBirthDate": "19610417",
    "OtherPatientIDs": "ALT-99812-ZZ",
    "AccessionNumber": "ACC-771903",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "House^Gregory",
}

ENCODINGS = {
    "explicit": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "j2k": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
}


def mr_dataset(pixels: np.ndarray, *, study: str, series: str, number: int = 1, monochrome1: bool = False,
               slope: float | None = None, intercept: float | None = None, modality: str = "MR",
               image_type=("ORIGINAL", "PRIMARY", "AXIAL"), description: str = "T1 AX POST") -> Dataset:
    """A Part 10 MR dataset in explicit VR little endian; (F,H,W) pixels make a multi-frame instance."""
    pixels = np.asarray(pixels)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Modality, ds.ImageType, ds.SeriesDescription = modality, list(image_type), description
    ds.InstanceNumber, ds.SeriesNumber = number, 1
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261201", "101500", "1"
    ds.PatientSex = "F"
    for k, v in PHI.items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept or 0, "US"
    ds.PixelData = pixels.tobytes()
    return ds


def encode(ds: Dataset, encoding: str) -> Dataset:
    """The same pixels in another transfer syntax (lossless ones by pydicom's encoders; jpegll:
    JPEG lossless process 14 by GDCM; jpeg8: JPEG baseline, lossy, 8-bit only, by OpenCV)."""
    if encoding == "jpegll":
        return _gdcm_jpeg_lossless(ds)
    if encoding == "jpeg8":
        frames = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
        jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames]
        ds.PixelData = encapsulate(jpegs)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
        return ds
    if encoding != "explicit":
        ds.compress(ENCODINGS[encoding])
    return ds


def _gdcm_jpeg_lossless(ds: Dataset) -> Dataset:
    import tempfile

    import gdcm

    with tempfile.TemporaryDirectory() as tmp:
        plain, packed = f"{tmp}/plain.dcm", f"{tmp}/packed.dcm"
        write(ds, Path(plain))
        reader = gdcm.ImageReader()
        reader.SetFileName(plain)
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(packed)
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        return pydicom.dcmread(packed)


def write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def to_bytes(ds: Dataset) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def series(pixels: list[np.ndarray], **kw) -> list[Dataset]:
    """One series of single-frame instances, numbered from 1."""
    study, uid = kw.pop("study", generate_uid()), kw.pop("series", generate_uid())
    return [mr_dataset(p, study=study, series=uid, number=i + 1, **kw) for i, p in enumerate(pixels)]


def bundled(name: str) -> Path:
    """A file bundled in pydicom's wheel; never downloaded (tests run offline)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    return Path(path)

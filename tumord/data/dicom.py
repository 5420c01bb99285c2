"""Reading DICOM instances: pixels to model input in the order the standard defines.

A DICOM file is recognised by the `DICM` marker after its 128-byte preamble, whatever its name.
Per frame: the stored values, the Modality LUT (RescaleSlope/Intercept, or the Enhanced MR
functional groups' per-frame values), MONOCHROME1 inverted to read like MONOCHROME2, then the
project's own normalization (`to_gray_uint8`: 8-bit values as they are, wider ones stretched over
their used range) and `resize`. Windowing (WindowCenter/Width) is not applied: it is for the
picture a person looks at, and would clip what the model sees differently per scanner.

Refused, with a reason, before any pixel is decoded: a modality other than MR, a LOCALIZER, an
instance without pixel data, colour, more pixels than the limit, and a transfer syntax that no
installed decoder reads (named, with what to install). pydicom and its plugins are the optional
`dicom` extra; without them a DICOM file is refused with that advice.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np

from tumord.data.images import ImageError, Preprocess, resize, to_gray_uint8

INSTALL = "install the optional DICOM support: pip install 'tumord[dicom]'"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_dicom(data: bytes) -> bool:
    """The Part 10 file marker; files without the preamble (pre-1993 ACR-NEMA) are not accepted."""
    return data[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomInfo:
    """The identifiers a verdict carries. Nothing here identifies the patient: no name, birth
    date, patient or accession ID, institution or physician; UIDs and the series description only."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    modality: str
    series_description: str
    frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def _info(ds, frames: int) -> DicomInfo:
    number = ds.get("InstanceNumber")
    return DicomInfo(
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        instance_number=int(number) if number not in (None, "") else None,
        modality=str(ds.get("Modality", "")),
        series_description=str(ds.get("SeriesDescription", "")),
        frames=frames,
    )


def _pydicom():
    try:
        import pydicom
    except ImportError:
        return None
    return pydicom


def refusal(ds) -> str | None:
    """Why this instance is not a brain MR image the model can judge; None when it is."""
    modality = str(ds.get("Modality", "")) or "missing"
    if modality != "MR":
        return f"is a DICOM instance of modality {modality}; only MR images are classified"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        return "is an MR localizer (ImageType contains LOCALIZER), not a diagnostic slice"
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        return "is a DICOM instance without pixel data (e.g. a report or presentation state)"
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return (f"is a colour image ({photometric or 'no PhotometricInterpretation'}, {samples} samples per "
                "pixel); MR slices are MONOCHROME1 or MONOCHROME2")
    return None


def _check_decodable(ds, path) -> None:
    from pydicom.pixels import get_decoder

    uid = ds.file_meta.get("TransferSyntaxUID")
    if uid is None:
        raise ImageError(path, "is a DICOM file without a TransferSyntaxUID in its file meta information")
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise ImageError(path, f"is encoded as {uid.name} ({uid}), which tumord cannot decode; have the sender "
                               "use explicit VR little endian, RLE, JPEG, JPEG-LS or JPEG 2000") from None
    if not decoder.is_available:
        raise ImageError(path, f"is encoded as {uid.name} ({uid}), and no installed decoder reads it; {INSTALL}")


def _rescale(ds, frames: np.ndarray) -> np.ndarray:
    """Modality LUT per frame: top-level Rescale Slope/Intercept or LUT, or the Enhanced MR
    PixelValueTransformationSequence (shared, or per frame)."""
    from pydicom.pixels import apply_modality_lut

    shared = ds.get("SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if shared is None and per_frame is None:
        return np.asarray(apply_modality_lut(frames, ds), np.float32)
    out = frames.astype(np.float32)
    for k in range(len(out)):
        groups = [g for g in ((per_frame[k] if per_frame and k < len(per_frame) else None),
                              (shared[0] if shared else None)) if g is not None]
        for g in groups:
            if "PixelValueTransformationSequence" in g:
                t = g.PixelValueTransformationSequence[0]
                out[k] = out[k] * float(t.get("RescaleSlope", 1)) + float(t.get("RescaleIntercept", 0))
                break
    return out


def read_frames(data: bytes, path, max_pixels: int) -> tuple[np.ndarray, DicomInfo]:
    """DICOM bytes -> (frames, info): frames are (F, rows, cols) after the Modality LUT, as
    float32 (or uint8 when stored 8-bit without rescale), with MONOCHROME1 already inverted."""
    pydicom = _pydicom()
    if pydicom is None:
        raise ImageError(path, f"is a DICOM file; {INSTALL}")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as e:  # pydicom raises many kinds for a damaged header
        raise ImageError(path, f"is a damaged DICOM file ({type(e).__name__}: {e})") from None
    if "SOPInstanceUID" not in ds:  # pydicom reads a cut header without complaint
        raise ImageError(path, "is a damaged or incomplete DICOM file: it has no SOPInstanceUID")
    reason = refusal(ds)
    if reason:
        raise ImageError(path, reason)
    frames = int(ds.get("NumberOfFrames") or 1)
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise ImageError(path, f"is a DICOM image whose header gives an impossible size {cols}x{rows}x{frames}")
    if rows * cols * frames > max_pixels:
        raise ImageError(path, f"is a DICOM image of {frames} frame(s) of {cols}x{rows} pixels; the limit is "
                               f"{max_pixels / 1e6:g} megapixels, so it was not decoded")
    _check_decodable(ds, path)
    try:
        pixels = ds.pixel_array
    except Exception as e:  # a damaged or truncated pixel stream
        name = ds.file_meta.TransferSyntaxUID.name
        raise ImageError(path, f"has pixel data that could not be decoded as {name} ({type(e).__name__}: {e})") \
            from None
    pixels = pixels.reshape(frames, rows, cols)
    identity = "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds and "SharedFunctionalGroupsSequence" \
        not in ds and "PerFrameFunctionalGroupsSequence" not in ds
    if pixels.dtype == np.uint8 and identity:
        out = pixels  # 8-bit as the project's PNG and JPEG scans are: values kept as they are
        if ds.PhotometricInterpretation == "MONOCHROME1":
            out = 255 - out
    else:
        out = _rescale(ds, pixels)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            out = -out  # the min-max stretch that follows maps it to MONOCHROME2's orientation
    return out, _info(ds, frames)


def gray_frames(data: bytes, path, max_pixels: int) -> tuple[list[np.ndarray], DicomInfo]:
    """DICOM bytes -> each frame as 8-bit gray at full resolution (normalized), and the identifiers."""
    frames, info = read_frames(data, path, max_pixels)
    return [to_gray_uint8(f, path) for f in frames], info


def model_slices(data: bytes, path, pre: Preprocess, max_pixels: int) -> tuple[np.ndarray, DicomInfo]:
    """DICOM bytes -> (F, size, size) uint8 model inputs, one per frame, and the instance's identifiers."""
    grays, info = gray_frames(data, path, max_pixels)
    return np.stack([resize(g, pre) for g in grays]), info

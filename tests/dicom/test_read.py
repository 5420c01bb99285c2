"""Reading DICOM: the same pixels in every encoding give the same model input; the Modality LUT,
MONOCHROME1 and multi-frame are handled as the standard says; what the model cannot judge is
refused with a reason; an encoding nothing decodes is named."""
import numpy as np
import pytest

from tests.dicom.synth import PHI, bundled, encode, mr_dataset, to_bytes
from tests.synthetic import scan, tiny_model
from tumord.model import checkpoint
from tumord.data.dicom import is_dicom, model_slices
from tumord.data.images import ImageError, Preprocess
from pydicom.uid import generate_uid

PRE = Preprocess(size=32)
LIMIT = 25_000_000
BUNDLED_MR = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm", "MR_small_padded.dcm"]


def slices(data: bytes, name="x.dcm") -> np.ndarray:
    return model_slices(data, name, PRE, LIMIT)[0]


def mr16(rng, frames=None) -> np.ndarray:
    """A generated head scaled to 12-bit values, as MR scanners store them."""
    shape = (frames,) if frames else ()
    imgs = [scan(bool(rng.integers(2)), rng, 48).astype(np.uint16) * 16 for _ in range(frames or 1)]
    return np.stack(imgs).reshape(shape + imgs[0].shape)


def test_bundled_mr_in_every_encoding_gives_bit_identical_input_and_the_same_prediction(tmp_path):
    """pydicom's MR_small in 8 transfer syntaxes (explicit/implicit/big endian, RLE, JPEG 2000, JPEG-LS)."""
    tiny_model(tmp_path / "m.npz", size=32)
    model = checkpoint.load(tmp_path / "m.npz")
    inputs = {name: slices(bundled(name).read_bytes(), name) for name in BUNDLED_MR}
    first = inputs[BUNDLED_MR[0]]
    assert first.shape == (1, 32, 32) and first.std() > 10  # a real picture, not a flat field
    for name, x in inputs.items():
        assert np.array_equal(x, first), name
    probs = model.predict(np.concatenate(list(inputs.values())))
    assert np.array_equal(probs, np.repeat(probs[:1], len(probs), axis=0))


@pytest.mark.parametrize("encoding", ["rle", "j2k", "jpegls", "jpegll"])
def test_synthetic_16bit_series_lossless_encodings_are_bit_identical(encoding):
    rng = np.random.default_rng(1)
    px = mr16(rng, frames=3)
    plain = slices(to_bytes(mr_dataset(px, study=generate_uid(), series=generate_uid())))
    packed = encode(mr_dataset(px, study=generate_uid(), series=generate_uid()), encoding)
    assert packed.file_meta.TransferSyntaxUID.is_compressed  # really re-encoded
    assert np.array_equal(slices(to_bytes(packed)), plain)


def test_jpeg_baseline_is_decoded_and_close_to_the_original(tmp_path):
    """Lossy JPEG baseline (8-bit) through the installed plugin: close, not identical."""
    rng = np.random.default_rng(2)
    px = scan(True, rng, 48)
    plain = slices(to_bytes(mr_dataset(px, study="1.2.3", series="1.2.3.4")))
    lossy = slices(to_bytes(encode(mr_dataset(px, study="1.2.3", series="1.2.3.4"), "jpeg8")))
    diff = np.abs(plain.astype(int) - lossy.astype(int))
    assert 0 < diff.mean() < 3


def test_modality_lut_comes_before_normalization():
    """Stored values 4095 - p with RescaleSlope -1, intercept 4095 are the values p: without the
    LUT the model would see the negative image."""
    rng = np.random.default_rng(3)
    px = mr16(rng)
    plain = slices(to_bytes(mr_dataset(px, study="1.2", series="1.2.1")))
    stored = (4095 - px).astype(np.uint16)
    rescaled = slices(to_bytes(mr_dataset(stored, study="1.2", series="1.2.1", slope=-1.0, intercept=4095.0)))
    assert np.array_equal(rescaled, plain)
    without = slices(to_bytes(mr_dataset(stored, study="1.2", series="1.2.1")))
    assert not np.array_equal(without, plain)


@pytest.mark.parametrize("bits", [8, 16])
def test_monochrome1_is_inverted_to_match_monochrome2(bits):
    rng = np.random.default_rng(4)
    px = scan(False, rng, 48) if bits == 8 else mr16(rng)
    top = 255 if bits == 8 else 4095
    plain = slices(to_bytes(mr_dataset(px, study="1.2", series="1.2.1")))
    inverted = (top - px.astype(np.int32)).astype(px.dtype)
    mono1 = slices(to_bytes(mr_dataset(inverted, study="1.2", series="1.2.1", monochrome1=True)))
    assert np.array_equal(mono1, plain)


def test_each_frame_of_a_multiframe_instance_is_a_slice():
    rng = np.random.default_rng(5)
    px = mr16(rng, frames=4)
    multi, info = model_slices(to_bytes(mr_dataset(px, study="1.2", series="1.2.1")), "m.dcm", PRE, LIMIT)
    assert multi.shape == (4, 32, 32) and info.frames == 4
    for k in range(4):
        single = slices(to_bytes(mr_dataset(px[k], study="1.2", series="1.2.1")))
        assert np.array_equal(multi[k], single[0]), k


def _without_pixels():
    ds = mr_dataset(np.zeros((8, 8), np.uint16), study="1.2", series="1.2.1")
    del ds.PixelData
    return to_bytes(ds)


def _colour():
    ds = mr_dataset(np.zeros((8, 8), np.uint16), study="1.2", series="1.2.1")
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = np.zeros((8, 8, 3), np.uint8).tobytes()
    return to_bytes(ds)


@pytest.mark.parametrize("make, reason", [
    (lambda: bundled("CT_small.dcm").read_bytes(), "modality CT; only MR images are classified"),
    (lambda: to_bytes(mr_dataset(np.ones((8, 8), np.uint16), study="1.2", series="1.2.1",
                                 image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))), "localizer"),
    (_without_pixels, "without pixel data"),
    (_colour, "colour image (RGB"),
    (lambda: bundled("SC_rgb_rle.dcm").read_bytes(), "modality OT"),
])
def test_what_the_model_cannot_judge_is_refused_with_a_reason(make, reason):
    with pytest.raises(ImageError) as e:
        slices(make(), "scan.dcm")
    assert reason in e.value.reason and str(e.value).startswith("scan.dcm: ")


def test_a_transfer_syntax_nothing_decodes_is_named():
    ds = mr_dataset(np.ones((8, 8), np.uint16), study="1.2", series="1.2.1")
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    with pytest.raises(ImageError) as e:
        slices(to_bytes(ds), "video.dcm")
    assert "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)" in e.value.reason


def test_damaged_files_are_clear_errors_not_tracebacks():
    with pytest.raises(ImageError, match="could not be decoded|damaged"):
        slices(bundled("MR_truncated.dcm").read_bytes(), "cut.dcm")
    good = bundled("MR_small.dcm").read_bytes()
    with pytest.raises(ImageError, match="^header.dcm: is a damaged or incomplete DICOM file"):
        slices(good[:300], "header.dcm")
    with pytest.raises(ImageError, match="damaged"):
        slices(bytes(128) + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + bytes(20), "meta.dcm")


def test_pixel_limit_is_checked_before_decoding():
    data = to_bytes(mr_dataset(np.zeros((5, 64, 64), np.uint16), study="1.2", series="1.2.1"))
    with pytest.raises(ImageError, match="5 frame.*64x64.*limit is 0.02 megapixels"):
        model_slices(data, "big.dcm", PRE, 20_000)


def test_recognised_by_preamble_and_identifiers_carry_no_patient_data():
    data = bundled("MR_small.dcm").read_bytes()
    assert is_dicom(data) and not is_dicom(b"\x89PNG\r\n\x1a\n" + bytes(200))
    ds = mr_dataset(np.ones((8, 8), np.uint16), study="1.2.3", series="1.2.3.4", number=7)
    _, info = model_slices(to_bytes(ds), "x", PRE, LIMIT)
    d = info.to_dict()
    assert d["study_instance_uid"] == "1.2.3" and d["instance_number"] == 7 and d["modality"] == "MR"
    text = repr(d)
    for value in PHI.values():
        assert value not in text and value.split("^")[0] not in text

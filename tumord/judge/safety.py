"""Checks that run before a file is decoded: where it really is, and how big the image would be.

A decompression bomb is a small file that decodes to billions of pixels. Its size is in the
header, so we read width and height ourselves (PNG IHDR, JPEG SOF, BMP info header, TIFF IFD)
and refuse anything over the pixel limit before OpenCV allocates a byte. Only these four formats
pass: for anything else we cannot make that promise. Truncation that the decoder would only
complain about on stderr (a PNG without IEND, a JPEG without EOI) is caught here too.
"""
from __future__ import annotations

import os
import struct

from tumord.data.images import IMAGE_SUFFIXES, ImageError

SUPPORTED = "JPEG, PNG, TIFF or BMP"

# formats people drop by mistake, named so the error says what the file is
_KNOWN_OTHERS = [
    (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"), (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 image"),
]


def outside_link(path: str, root: str) -> str | None:
    """Why a symbolic link may not be followed (None when it may): it must stay inside `root`."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    real_root = os.path.realpath(root)
    if os.path.commonpath([target, real_root]) != real_root:
        return "is a link to a file outside the input folder; links may only point inside it"
    if not os.path.exists(target):
        return "is a link to a file that does not exist"
    return None


def check_suffix(path: str) -> None:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in IMAGE_SUFFIXES:
        shown = f"the extension {suffix!r}" if suffix else "no extension"
        raise ImageError(path, f"has {shown}; scans must be {SUPPORTED} files "
                               f"({', '.join(IMAGE_SUFFIXES)})")


def check_image(data: bytes, path: str, max_pixels: int) -> str:
    """Returns the format of `data` or raises ImageError saying why it must not be decoded."""
    if not data:
        raise ImageError(path, "is empty (0 bytes)")
    fmt, width, height = image_size(data, path)
    if width <= 0 or height <= 0:
        raise ImageError(path, f"is a {fmt} image whose header gives an impossible size {width}x{height}")
    if width * height > max_pixels:
        raise ImageError(path, f"is a {fmt} image of {width}x{height} pixels ({width * height / 1e6:.0f} megapixels); "
                               f"the limit is {max_pixels / 1e6:g} megapixels, so it was not decoded")
    return fmt


def image_size(data: bytes, path: str) -> tuple[str, int, int]:
    """(format, width, height) from the header alone."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return "PNG", *_png(data, path)
        if data.startswith(b"\xff\xd8"):
            return "JPEG", *_jpeg(data, path)
        if data.startswith(b"BM"):
            return "BMP", *_bmp(data)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return "TIFF", *_tiff(data)
    except (struct.error, IndexError):
        raise ImageError(path, "is truncated or corrupt: its image header is incomplete") from None
    for magic, what in _KNOWN_OTHERS:
        if data.startswith(magic):
            raise ImageError(path, f"is {what}, not a {SUPPORTED} image")
    if data[128:132] == b"DICM":
        raise ImageError(path, f"is a DICOM file; export the scan as a {SUPPORTED} image")
    if _looks_like_text(data):
        raise ImageError(path, f"contains text, not a {SUPPORTED} image")
    raise ImageError(path, f"is not a {SUPPORTED} image (its first bytes match none of these formats)")


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # a multi-byte character cut at the end is still text
            return False
        text = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\r\n\t\f" for c in text)


def _png(data: bytes, path: str) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise ImageError(path, "is a corrupt PNG: it does not start with an IHDR header")
    if b"IEND" not in data[-4096:]:
        raise ImageError(path, "is a truncated PNG: its end (IEND) is missing")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# start-of-frame markers that carry the size; C4 (DHT), C8 (JPG), CC (DAC) do not
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes, path: str) -> tuple[int, int]:
    i, size = 2, None
    while i < len(data):
        if data[i] != 0xFF:
            raise ImageError(path, "is a corrupt JPEG: its segments do not line up")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            size = (width, height)
        if marker == 0xDA:  # start of scan: compressed data follows and must end with EOI
            if size is None:
                raise ImageError(path, "is a corrupt JPEG: image data comes before its size")
            if data.rfind(b"\xff\xd9") < i:
                raise ImageError(path, "is a truncated JPEG: its end (EOI) is missing")
            return size
        i += 2 + length
    raise ImageError(path, "is a truncated JPEG: it ends before its image data")


def _bmp(data: bytes) -> tuple[int, int]:
    (header,) = struct.unpack("<I", data[14:18])
    if header == 12:  # BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    width, height = struct.unpack("<ii", data[18:26])
    return width, abs(height)  # negative height: rows stored top-down


def _tiff(data: bytes) -> tuple[int, int]:
    e = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(e + "H", data[2:4])[0] == 43
    if big:  # BigTIFF: 8-byte offsets and counts, 20-byte entries
        (ifd,) = struct.unpack(e + "Q", data[8:16])
        (count,) = struct.unpack(e + "Q", data[ifd : ifd + 8])
        first, step, value_at = ifd + 8, 20, 12
    else:
        (ifd,) = struct.unpack(e + "I", data[4:8])
        (count,) = struct.unpack(e + "H", data[ifd : ifd + 2])
        first, step, value_at = ifd + 2, 12, 8
    dims: dict[int, int] = {}
    for k in range(min(count, 4096)):
        at = first + k * step
        tag, kind = struct.unpack(e + "HH", data[at : at + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT, LONG or LONG8
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                raise struct.error("bad size type")
            (dims[tag],) = struct.unpack(e + fmt, data[at + value_at : at + value_at + struct.calcsize(fmt)])
    if 256 not in dims or 257 not in dims:
        raise struct.error("no size tags")
    return dims[256], dims[257]

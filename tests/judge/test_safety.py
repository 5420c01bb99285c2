"""Safety checks before decoding: header sizes, the pixel limit, truncation, links out of the folder."""
import os
import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from tumord.data.images import ImageError
from tumord.judge.safety import check_image, check_suffix, image_size, outside_link


def encoded(ext: str, img: np.ndarray, params=()) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG header claiming a huge image, with a tiny body."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def big_tiff(width: int, height: int) -> bytes:
    """A minimal little-endian BigTIFF header with width and height tags (LONG8)."""
    entries = [struct.pack("<HHQQ", 256, 16, 1, width), struct.pack("<HHQQ", 257, 16, 1, height)]
    return b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", len(entries)) + b"".join(entries)


class TestImageSize:
    @pytest.mark.parametrize("ext,params", [(".png", ()), (".jpg", ()), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
                                            (".bmp", ()), (".tif", ())])
    @pytest.mark.parametrize("channels", [1, 3])
    def test_header_size_matches_the_decoded_size(self, ext, params, channels):
        """Width and height read from the header equal what OpenCV decodes, for every supported format."""
        rng = np.random.default_rng(0)
        shape = (37, 53) if channels == 1 else (37, 53, 3)
        data = encoded(ext, (rng.random(shape) * 255).astype(np.uint8), params)
        fmt, w, h = image_size(data, "x")
        assert (h, w) == cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2]
        assert fmt in ("PNG", "JPEG", "BMP", "TIFF")

    def test_16_bit_tiff_and_big_endian_and_bigtiff_sizes(self):
        """16-bit TIFF, big-endian TIFF headers and BigTIFF are all read."""
        data = encoded(".tif", np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 50)
        assert image_size(data, "x") == ("TIFF", 30, 20)
        be = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + \
            struct.pack(">HHIHH", 256, 3, 1, 640, 0) + struct.pack(">HHII", 257, 4, 1, 480)
        assert image_size(be, "x") == ("TIFF", 640, 480)
        assert image_size(big_tiff(70000, 80000), "x") == ("TIFF", 70000, 80000)


class TestCheckImage:
    def test_decompression_bomb_is_refused_from_the_header(self):
        """A PNG claiming 100000x100000 pixels is refused at once, without decoding."""
        t = time.perf_counter()
        with pytest.raises(ImageError, match="10000 megapixels.*limit is 25 megapixels"):
            check_image(bomb_png(100_000, 100_000), "bomb.png", 25_000_000)
        assert time.perf_counter() - t < 0.1

    def test_real_image_over_the_limit_is_refused(self):
        """A genuine 6000x5000 PNG (tiny when compressed) exceeds a 25-megapixel limit."""
        data = encoded(".png", np.zeros((5000, 6000), np.uint8))
        assert len(data) < 200_000
        with pytest.raises(ImageError, match="6000x5000"):
            check_image(data, "big.png", 25_000_000)
        assert check_image(data, "big.png", 30_000_000) == "PNG"

    @pytest.mark.parametrize("ext", [".png", ".jpg"])
    def test_truncated_files_are_named_truncated(self, ext):
        """A PNG or JPEG cut short is refused as truncated before the decoder sees it."""
        data = encoded(ext, (np.random.default_rng(1).random((64, 64)) * 255).astype(np.uint8))
        with pytest.raises(ImageError, match="truncated"):
            check_image(data[: len(data) * 2 // 3], "cut" + ext, 10**8)

    @pytest.mark.parametrize("data,words", [
        (b"", "empty"),
        (b"just some notes\nnot an image\n", "contains text"),
        (b"GIF89a" + bytes(50), "GIF image"),
        (bytes(128) + b"DICM" + bytes(100), "DICOM"),
        (b"%PDF-1.4 ...", "PDF"),
        (bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8)), "not a JPEG, PNG, TIFF or BMP"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "corrupt PNG"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
        (b"II*\x00\xff\xff\x00\x00", "truncated or corrupt"),
    ])
    def test_unusable_bytes_get_a_reason_a_person_understands(self, data, words):
        """Empty, text, other formats, random and header-truncated bytes each say what they are."""
        with pytest.raises(ImageError, match=words):
            check_image(data, "f.png", 10**8)


class TestPlaces:
    def test_suffixes(self):
        """Only image extensions pass; the message lists the accepted ones."""
        check_suffix("a/Scan.JPEG")
        with pytest.raises(ImageError, match="extension '.gif'.*png"):
            check_suffix("x.gif")
        with pytest.raises(ImageError, match="no extension"):
            check_suffix("README")

    def test_links_must_stay_inside_the_folder(self, tmp_path):
        """A link out of the input folder and a dangling link are refused; a link inside is allowed."""
        root = tmp_path / "in"
        root.mkdir()
        (root / "real.png").write_bytes(b"x")
        (tmp_path / "secret.png").write_bytes(b"y")
        os.symlink(root / "real.png", root / "inside.png")
        os.symlink(tmp_path / "secret.png", root / "out.png")
        os.symlink(root / "missing.png", root / "dangling.png")
        os.symlink("../secret.png", root / "relative.png")
        assert outside_link(str(root / "inside.png"), str(root)) is None
        assert outside_link(str(root / "real.png"), str(root)) is None
        assert "outside the input folder" in outside_link(str(root / "out.png"), str(root))
        assert "outside the input folder" in outside_link(str(root / "relative.png"), str(root))
        assert "does not exist" in outside_link(str(root / "dangling.png"), str(root))

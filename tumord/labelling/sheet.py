"""A contact sheet: scans in a grid, each with a caption, as one PNG a person can look through."""
from __future__ import annotations

import cv2
import numpy as np

TILE, CAPTION_LINES, LINE = 160, 2, 14


def contact_sheet(images: list[np.ndarray], captions: list[list[str]], columns: int = 6) -> bytes:
    """uint8 gray images of any size and up to two caption lines each -> PNG bytes."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    cell_h = TILE + CAPTION_LINES * LINE + 6
    sheet = np.full((rows * cell_h, columns * TILE), 255, np.uint8)
    for i, (img, lines) in enumerate(zip(images, captions)):
        y, x = (i // columns) * cell_h, (i % columns) * TILE
        sheet[y : y + TILE, x : x + TILE] = cv2.resize(img, (TILE, TILE), interpolation=cv2.INTER_AREA)
        for n, text in enumerate(lines[:CAPTION_LINES]):
            cv2.putText(sheet, text[:26], (x + 3, y + TILE + LINE * (n + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.36, 0, 1,
                        cv2.LINE_AA)
    ok, png = cv2.imencode(".png", sheet)
    if not ok:
        raise ValueError("OpenCV could not encode the contact sheet as PNG")
    return png.tobytes()

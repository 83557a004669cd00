"""What an image in a prompt costs, as OpenAI bills it: a base, and a price per 512 px tile of the
image as the model sees it (scaled to fit 2048 x 2048, then its shortest side to 768 px; never up),
or the base alone at ``detail: "low"``. The prices differ by model family (OpenAI's "Images and vision"
guide): gpt-4o-mini bills an image 33 times gpt-4o's tokens (the same dollars at its price), the gpt-5
family 70 and 140. The size is read from an inline image's header (PNG, JPEG, GIF, WebP); an image
whose size cannot be read (a URL) is counted as a 1024 x 1024 one, and bounded (for a budget's hold)
as the largest the model can be sent. Models that count 32 px patches instead (gpt-4.1-mini and -nano,
o4-mini) are counted by tiles here.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Mapping
from typing import Any

FAMILIES = (("gpt-4o-mini", (2833, 5667)), ("gpt-5", (70, 140)))
"""(model name prefix, (base, per tile)) where they differ from gpt-4o's."""
DEFAULT = (85, 170)
UNKNOWN_TILES = 4
"""A 1024 x 1024 image at high detail."""
MOST_TILES = 8
"""The most tiles an image can be: 768 x 2048 after scaling (4 x 2 tiles of 512)."""
_HEAD = 65_536
"""How much of an inline image is decoded to find its size (a JPEG's size may follow its metadata)."""


def image_tokens(part: Mapping[str, Any], model: str, *, bound: bool = False) -> int:
    """The tokens of one image part (chat's ``image_url`` or the Responses API's ``input_image``); with
    ``bound``, at least what it could cost."""
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else part.get("detail")
    url = image.get("url") if isinstance(image, Mapping) else image if isinstance(image, str) else None
    base, tile = next((prices for prefix, prices in FAMILIES if model.startswith(prefix)), DEFAULT)
    if detail == "low":
        return base
    size = _size(url) if isinstance(url, str) and url.startswith("data:") else None
    if size is None:
        return base + tile * (MOST_TILES if bound else UNKNOWN_TILES)
    return base + tile * tiles(*size)


def tiles(width: int, height: int) -> int:
    """The 512 px tiles of an image as the model sees it at high detail."""
    fit = min(1.0, 2048 / max(width, height, 1))
    wide, high = width * fit, height * fit
    fit = min(1.0, 768 / max(min(wide, high), 1.0))
    return max(1, math.ceil(wide * fit / 512) * math.ceil(high * fit / 512))


def _size(url: str) -> tuple[int, int] | None:
    """An inline image's width and height, from its header; None when it cannot be read."""
    try:
        data = base64.b64decode(url[url.index(",") + 1:][: _HEAD * 4 // 3 // 4 * 4])
    except (ValueError, binascii.Error):
        return None
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg(data)
    except struct.error:
        return None
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill bytes before a marker
            at += 1
            continue
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    return None

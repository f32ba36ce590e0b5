"""A title card: the recipe's prompt as a headline over a gradient picked by the seed.

Deterministic (same payload, same PNG bytes with the same Pillow), CPU-only, fast.
"""

from __future__ import annotations

import base64
import hashlib
import io

from PIL import Image, ImageDraw, ImageFont


def _colour(seed: int, salt: bytes) -> tuple[int, int, int]:
    digest = hashlib.sha256(salt + seed.to_bytes(8, "big")).digest()
    return digest[0], digest[1], digest[2]


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: int) -> list[str]:
    """Greedy word wrap by rendered width; a word wider than the line is cut."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if font.getlength(candidate) <= max_width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while font.getlength(word) > max_width and len(word) > 1:
            cut = max(1, len(word) * max_width // max(1, int(font.getlength(word))))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines


class TitleCard:
    def run(self, payload: dict) -> dict:
        width, height, seed = payload["width"], payload["height"], payload["seed"]
        top, bottom = _colour(seed, b"top"), _colour(seed, b"bottom")
        image = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(image)
        for y in range(height):
            t = y / max(1, height - 1)
            draw.line(
                [(0, y), (width, y)],
                fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
            )
        title = payload.get("params", {}).get("title") or payload["prompt"]
        margin = width // 16
        size = max(8, width // 14)
        y = height // 8
        blocks = [(title, ImageFont.load_default(size=size), 4)]
        if payload.get("script"):
            blocks.append((payload["script"], ImageFont.load_default(size=max(8, size * 3 // 5)), 3))
        for text, font, max_lines in blocks:
            line_height = round(font.size * 1.3)
            for line in _wrap(text, font, width - 2 * margin)[:max_lines]:
                draw.text((margin + 1, y + 1), line, fill=(0, 0, 0), font=font)
                draw.text((margin, y), line, fill=(255, 255, 255), font=font)
                y += line_height
            y += line_height // 2
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False)
        return {"image_png_base64": base64.b64encode(buffer.getvalue()).decode("ascii")}

"""Company colours made readable: text on the brand colour, and the brand colour as text."""

from __future__ import annotations

import re

HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
FALLBACK = "#1d4f91"


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def luminance(color: str) -> float:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(a: str, b: str) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _darken(color: str, factor: float) -> str:
    r, g, b = (int(int(color[i : i + 2], 16) * factor) for i in (1, 3, 5))
    return f"#{r:02x}{g:02x}{b:02x}"


def palette(color: str | None) -> dict[str, str]:
    """brand: the colour itself; on_brand: text on it; brand_text: the colour darkened until
    it reads on white (WCAG AA, 4.5:1)."""
    brand = color if color and HEX_COLOR.match(color) else FALLBACK
    brand = brand.lower()
    on_brand = "#ffffff" if contrast(brand, "#ffffff") >= contrast(brand, "#111111") else "#111111"
    brand_text = brand
    factor = 1.0
    while contrast(brand_text, "#ffffff") < 4.5 and factor > 0:
        factor -= 0.05
        brand_text = _darken(brand, factor)
    return {"brand": brand, "on_brand": on_brand, "brand_text": brand_text}


def stylesheet(color: str | None) -> str:
    colors = palette(color)
    return (
        ":root{"
        f"--brand:{colors['brand']};--on-brand:{colors['on_brand']};--brand-text:{colors['brand_text']}"
        "}\n"
    )

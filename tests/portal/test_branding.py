from __future__ import annotations

from portal.branding import contrast, palette


def test_brand_colours_always_readable() -> None:
    for color in ("#1d4f91", "#ffd400", "#00a0e9", "#ffffff", "#000000", "#7fbf7f", "not-a-colour", None):
        colors = palette(color)
        assert contrast(colors["brand"], colors["on_brand"]) >= 4.5, color
        assert contrast(colors["brand_text"], "#ffffff") >= 4.5, color

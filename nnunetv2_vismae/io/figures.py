"""Figures rendered off-screen (no display needed) and returned as PNG bytes for atomic writing."""

from __future__ import annotations

import io


def new_figure(size=(6.4, 4.4)):
    """A matplotlib Figure on the Agg backend, independent of pyplot's global state."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=size)


def png_bytes(figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()

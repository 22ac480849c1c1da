"""Small helpers for the report's and the analysis' figures and JSON files: pyplot without a
display, a figure as PNG bytes, floats JSON can hold, numbers for tables."""
from __future__ import annotations

import io
import math

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only), imported only when a figure is drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG (120 dpi, tight), then closed."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def finite(value):
    """JSON has no NaN: undefined values (a dead layer) become null."""
    if isinstance(value, np.ndarray):
        return [finite(v) for v in value.tolist()]
    if isinstance(value, list):
        return [finite(v) for v in value]
    value = float(value)
    return value if math.isfinite(value) else None


def fmt(value) -> str:
    """A value of a table or a title: three decimals, or a dash when undefined."""
    return "–" if value is None else f"{value:.3f}"

"""Deprecated name of :mod:`vocseg.plots` (every figure now lives there); kept so old imports work."""
from .plots import colorize, overlay, plot_curves  # noqa: F401

__all__ = ["colorize", "overlay", "plot_curves"]

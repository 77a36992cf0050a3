"""The package version, at the bottom of the layers so that any module (and the CLI) can read it."""

__version__ = "0.1.0"

"""Stand-in for the SM120 FA4 kernel package (see ../../README.md). Not a kernel."""

from . import interface  # noqa: F401

__version__ = "0.0.0+standin"
STANDIN = True

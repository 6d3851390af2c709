"""minicontainer's machinery: one module per part (see minicontainer.py)."""

__version__ = "0.1.0"

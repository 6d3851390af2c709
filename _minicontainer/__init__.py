"""minicontainer's machinery: one module per part, in the order of a
container's life; minicontainer.py, in front, says where each part lives.
Imports run one way, from the front down to constants."""

__version__ = "0.1.0"

"""The version, in a module of its own: spans name it, and nothing imports upward."""

__version__ = "0.1.0"

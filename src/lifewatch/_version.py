"""The version, in a module of its own: spans name it, and nothing imports upward."""

__version__ = "1.0.0rc1"

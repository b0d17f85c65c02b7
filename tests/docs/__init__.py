"""The README and the examples, run as written."""

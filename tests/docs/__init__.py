"""The README, the docs site and the examples, run as written."""

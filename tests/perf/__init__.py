"""Bounded resource checks (no timing: a shared machine is no stopwatch)."""

"""Standalone mode: everything one machine needs, started from one command (Redis included)."""

"""The chaos suite: real worker processes killed for real while calls flow; see harness.py."""

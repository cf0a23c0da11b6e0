"""The operator CLI: ``python -m ctl``."""

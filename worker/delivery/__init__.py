"""Delivery: producer -> stream -> drain -> batch -> upload -> reconcile, with quotas and replay."""

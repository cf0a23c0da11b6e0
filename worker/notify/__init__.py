"""Outbound notifications: a signed webhook per account for final upload statuses and held calls."""

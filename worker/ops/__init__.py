"""Operations: metrics, heartbeats and probes, the exporter, the overview, Flower's settings."""

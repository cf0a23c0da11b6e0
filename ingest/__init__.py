"""The ingestion service and the on-premise PBX readers: provider events in, calls to :mod:`worker.intake.service`."""

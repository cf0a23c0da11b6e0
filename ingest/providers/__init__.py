"""One module per provider: check the request is genuine, turn its event into ``InboundCall``."""

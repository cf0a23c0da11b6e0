"""The ingestion service's routers: operations, the generic API and conversions, providers, sessions."""

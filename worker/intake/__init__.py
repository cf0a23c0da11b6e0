"""The intake domain: routing, held calls, caller history, call refs, number pools, intake itself."""

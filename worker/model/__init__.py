"""The event model: field rules, the call and conversion models, upload kinds, the inbound call."""

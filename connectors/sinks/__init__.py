"""Sinks: deliver commands to ITSM APIs idempotently, within rate limits, dead-lettering failures."""

"""ServiceNow Table API sink (also serves the development ITSM, which speaks the same API)."""

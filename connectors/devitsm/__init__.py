"""The development ITSM: a SQLite-backed server speaking the subset of the ServiceNow Table API we use."""

"""The alert stages, in the order the engine runs them: order, dedup, correlate, maintenance,
severity, lifecycle; state.py holds the alert's state and the effects a record produces."""

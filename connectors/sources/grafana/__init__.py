"""Grafana alerting webhook contact point."""

"""Datadog webhooks integration, with the payload template documented in the README."""

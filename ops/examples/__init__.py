"""Runnable examples for producers."""

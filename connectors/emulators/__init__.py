"""Contract emulators of ITSM APIs that cannot run here (they follow the vendors' public API docs)."""

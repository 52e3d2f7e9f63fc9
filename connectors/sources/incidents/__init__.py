"""Incident state back from the ITSMs: readers per target and the sync onto itsm.incidents."""

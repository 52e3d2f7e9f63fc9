"""Generic webhook sink: each command POSTed as signed JSON."""

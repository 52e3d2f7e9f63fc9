"""The change side's pure decisions: CI update validation, deploy linking, the change gate and
change-success analytics."""

"""Stream processing for the ITSM event pipeline: core kernel, pure stages, Faust agents."""

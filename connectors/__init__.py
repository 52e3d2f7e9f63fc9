"""Sources and sinks at the edges of the pipeline; they depend on streams.core and nothing else."""

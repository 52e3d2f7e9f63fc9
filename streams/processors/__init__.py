"""What the agents do per record, without Faust: decode, run the stages, send every output and
await the broker, or dead-letter the input; plus the indexes built from compacted topics."""

"""Pure, synchronous pipeline stages: record (+ narrow state, ctx.now) in, record or Dropped out."""

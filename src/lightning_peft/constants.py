"""Constants shared across layers."""

IGNORE_INDEX = -100  # label of positions the cross-entropy loss skips (prompt tokens, padding, soft-prompt slots)

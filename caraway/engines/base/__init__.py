"""The contracts every engine fills in, and what they share (result meta, the chord join)."""

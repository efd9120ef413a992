"""The vocabulary: states, records, specs, durations, the task codec. No I/O, no Redis."""

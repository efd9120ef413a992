"""One network's state in Redis, read and written through the store: tasks, workers, logs, tables."""

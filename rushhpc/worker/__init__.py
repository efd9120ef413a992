"""The worker side: what a worker loop may call, the worker process, its heartbeat, the shipped loops."""

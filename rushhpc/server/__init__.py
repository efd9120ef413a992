"""Running redis-server: the `rushhpc redis` service and the embedded private one."""

"""Redis: the connection, the key layout, the Lua protocol, the worker's lean wire, secrets."""

"""Running redis-server: the `rushhpc redis` service and the embedded private one.

- `rushhpc.server.service`: start, stop and status of a server in its state folder (``rushhpc redis``)
- `rushhpc.server.users`: its network users (``rushhpc redis user``)
- `rushhpc.server.folder`: the state folder, its files, private writes and its lock
- `rushhpc.server.binary`: finding a redis-server binary (>= 6.2, TLS) for both servers
- `rushhpc.server.ports`: the clients' host name, free ports and who holds a taken one
- `rushhpc.server.tls`: the generated CA and certificates
- `rushhpc.server.conf`: the redis.conf and ACL text (`acl_rules`, `NETWORK_COMMANDS`)
- `rushhpc.server.embedded`: the private server of a session that configured no Redis
"""

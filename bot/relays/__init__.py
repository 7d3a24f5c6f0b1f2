"""A server's relays: stored with encrypted keys (store), rested when they fail (health),
tried in order with failover under one deadline per job (pool), and a per-server breaker for
relays that keep timing out (breaker)."""

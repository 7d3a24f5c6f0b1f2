"""Database backends (bot/store.py chooses one): PostgreSQL in postgres.py; SQLite is aiosqlite itself."""

"""Presence: who has a session open in a room, kept alive by heartbeats and expired by a TTL."""

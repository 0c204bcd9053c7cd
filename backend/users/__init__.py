"""Users: provisioned from Clerk identities on first sight, soft-deleted, never edited by clients
beyond their profile."""

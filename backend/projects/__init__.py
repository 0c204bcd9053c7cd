"""Projects: a user's own records, keyset pages, full-text search on the database's index."""

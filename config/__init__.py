"""Settings, logging, ids and the database engine: read by every other package, importing none."""

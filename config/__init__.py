"""Settings, logging and the database engine: what every other package reads, importing none of them."""

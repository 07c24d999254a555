"""The PostgreSQL read model: `backbone run sink` and the versioned SQL migrations of its schema."""

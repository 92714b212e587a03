"""Database models, one module per component that owns the tables."""

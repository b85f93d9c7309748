"""The store: the SQL database, its tables, and the append-only event log."""

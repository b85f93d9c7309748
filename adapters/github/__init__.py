"""GitHub: the code host behind the gated actions (and, later, webhooks)."""

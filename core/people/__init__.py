"""People and their rights: orgs, users with roles, API tokens, and the Principal every check asks."""

"""Sessions: workstreams that group tasks (issue 17)."""

"""Tasks: the state machine and its one writer, the Tasks service, and the runner that claims and runs turns."""

"""The command grammar and the commands every channel runs (console, Slack, Telegram, GitHub, REST)."""

"""The console channel: Shepherd's command grammar in a terminal."""

"""The application shell: settings, CLI, aiohttp app assembly, background services."""

"""Remote runners: the Runner port (core.runners) on an existing engine, each speaking its engine's API."""

"""Deploy hooks: core.actions.DeployHook over HTTP."""

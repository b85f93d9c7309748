"""Deploy hooks: core.autonomy.actions.DeployHook over HTTP."""

"""REST: one module per API dialect over one small route framework (framework.py)."""

"""Graduated autonomy: the policy, confirmations people decide, and the gated actions Shepherd carries out."""

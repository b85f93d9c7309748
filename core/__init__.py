"""Shepherd's domain: orgs, users, tokens, projects, agents, events and the command grammar.

core/ knows no platform and no HTTP. Adapters translate to and from it.
"""

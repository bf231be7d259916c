"""Thin asset definitions: each calls `ml/` and the resources, and records what a person wants to
see in the UI."""

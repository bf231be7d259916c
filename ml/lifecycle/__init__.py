"""The one model life cycle: registry, promotion gate, model cards, the pyfunc face of a version."""

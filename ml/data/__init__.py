"""Data intake shared by every domain: contracts, validation, reading drops, sources, and the
lineage snapshots."""

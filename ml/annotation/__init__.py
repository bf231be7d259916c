"""Annotation shared by every labeled domain: agreement (Cohen's kappa) and candidate selection."""

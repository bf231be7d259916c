"""Secrets, personal data and encryption: the pieces every plane shares."""

"""Monitoring what is served: prediction logs, whylogs profiles, drift reports and the sensors
that turn drift into retraining. Shown with serving in the UI (it watches what is served)."""

from assets.serving import GROUP, OWNERS

__all__ = ["GROUP", "OWNERS"]

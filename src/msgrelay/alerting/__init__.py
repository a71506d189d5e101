"""Alerts: the service monitor, the alert wire format and the notifiers (issue 5)."""

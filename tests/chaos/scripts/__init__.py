"""Worker scripts run as child processes by the chaos scenarios (each accepts the ``consume`` flags)."""

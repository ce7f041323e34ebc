"""How argus logs: its setup and writer thread, and the log lines said at most so often or gathered into one."""

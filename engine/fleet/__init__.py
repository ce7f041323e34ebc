"""The worker fleet: its link and registry, the hellos it is checked by, and the launchers that start its workers."""

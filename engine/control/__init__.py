"""The control loop: the controller built from the configuration, its plans applied every window, the MILP's process."""

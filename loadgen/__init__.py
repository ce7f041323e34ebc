"""Load generation and measurement: arrival processes, clients, reports and the `argus bench` suite."""

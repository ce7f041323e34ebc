"""The wire: typed messages between the engine, its workers and its clients, and one codec."""

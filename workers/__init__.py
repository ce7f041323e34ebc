"""The process per device: a blocking loop around one generation backend."""

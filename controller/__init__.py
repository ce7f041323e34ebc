"""The controller: pure policy that turns demand into a plan (workers per level K, redirection r[K][K']).

Nothing here opens a socket or reads the clock: callers pass the time and the
data in and get a `Plan` back. See docs/controller.md.
"""

"""The ZeroMQ front door for client programs, and what the worker link shares with it: the loop's ROUTER, CURVE."""

"""The command line's parts (engine/cli.py is its entry): argparse types, help, serve's checks, worker and keys."""

"""Admission and dispatch: a request checked and queued, its jobs routed to workers, batched and seen to their end."""

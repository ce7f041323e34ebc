"""Everything on the engine's event loop: front doors, admission, dispatch, worker registry."""

"""What a backend's run asks between its steps (is a request aborted or cancelled?), for tests that run a backend
directly, outside a worker."""

from __future__ import annotations


class NoControl:
    """Aborts nothing: every image runs its steps."""

    def between_steps(self) -> None:
        pass

    def is_aborted(self, request_id: str) -> bool:
        return False

    def cancelled(self, request_id: str) -> bool:
        return False

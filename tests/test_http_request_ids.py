"""HTTP request ids: unique in the process, from one random draw (not one per request)."""

import itertools
import uuid

from engine.http_api import request_ids


def test_ids_share_one_random_prefix_and_never_repeat(monkeypatch):
    draws = []
    real = uuid.uuid4
    monkeypatch.setattr(uuid, "uuid4", lambda: draws.append(1) or real())
    ids = list(itertools.islice(request_ids(), 1000))
    assert len(set(ids)) == 1000
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1
    assert len(draws) == 1

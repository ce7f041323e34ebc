"""A fleet stopped (SIGTERM) says each worker's Leaving in turn, within a millisecond: the images of the first to
leave go to a worker that stays, not to the next about to leave. Lost at its Leaving, each worker's images were
routed to the next of its fleet (idle, or with room), sent there for nothing, and from that one to the next."""

from dispatcher_harness import Harness, settle
from test_loss_lines import fleet, link_over

from protocols.worker_messages import BatchDone, ItemCancelled, Leaving
from protocols.worker_messages import Generate as Batch


async def test_the_images_of_a_worker_leaving_go_to_none_leaving_in_the_same_turn(tmp_path):
    h = Harness()
    leaves, stays, idle_leaves = fleet(h, 3)
    held = h.request()  # to `leaves`
    h.request()  # to `stays`
    link = link_over(h, tmp_path)
    try:
        (batch,) = h.batches(leaves.name)
        link._on_message(leaves.identity, Leaving())
        # what it says after its Leaving is dropped, as once it is lost: the image it gives back counts no try
        link._on_message(leaves.identity, BatchDone(batch.batch_id, [ItemCancelled(batch.items[0].request_id)]))
        link._on_message(idle_leaves.identity, Leaving())
        await settle()
    finally:
        link.close()
    assert not h.batches(idle_leaves.name)
    resent = [message for name, message in h.sent[2:] if isinstance(message, Batch)]
    assert [item.request_id for item in resent[0].items] == [held.jobs[0].job_id]
    assert h.batches(stays.name)[-1] is resent[0]
    assert held.jobs[0].given_back == 1
    assert h.registry.registered() == (stays,)

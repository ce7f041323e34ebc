"""A worker that is up and beating but fails every batch, as one with its GPU in a bad CUDA state, or of another
build, does: `python failing_worker.py --connect ADDRESS --worker-id ID [--answer failed|small|poison]
[--heal-when PATH]`.

It answers each image ItemFailed (`failed`) or an image of half the size asked (`small`), until PATH exists; then
images as asked. With `poison` it is healthy, and fails only the images whose prompt says "poison", as any worker fails
a request that breaks on its own account (out of memory at its size, a prompt that breaks the backend).

Flags it does not know are ignored, so it can stand in for an engine's local worker (whose command is
`-m engine.cli worker --connect ... --worker-id local-N ...`)."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pictures import blank_image, image_as_asked  # noqa: E402
from test_chaos import FakeWorker  # noqa: E402

from protocols.worker_messages import BatchDone, ItemDone, ItemFailed  # noqa: E402


def fails(item, how: str) -> bool:
    return how == "failed" or (how == "poison" and "poison" in item.prompt)


def answer(batch, how: str) -> list:
    image = blank_image(batch.width // 2, batch.height // 2, "png") if how == "small" else image_as_asked(batch)
    return [
        ItemFailed(item.request_id, "cuda_error", "CUDA error: illegal memory access")
        if fails(item, how)
        else ItemDone(item.request_id, image, 0, [], None, 1.0, 50)
        for item in batch.items
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connect", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--answer", choices=["failed", "small", "poison"], default="failed")
    parser.add_argument("--heal-when", type=Path)
    args, _ = parser.parse_known_args()
    worker = FakeWorker(args.connect, args.worker_id)
    worker.handshake(timeout_s=60)
    while True:
        batch = worker.next_batch(timeout_s=3600)
        if batch is not None:
            healed = args.heal_when is not None and args.heal_when.exists()
            worker.send(BatchDone(batch.batch_id, answer(batch, "good" if healed else args.answer)))


if __name__ == "__main__":
    main()

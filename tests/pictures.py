"""What the tests check of a picture the code wrote, and the pictures a test answers for a worker."""

import functools

from PIL import Image

from protocols.codec import Blob
from workers.image_encoding import encode_image


def opens_as_png(path, wider_than: int = 0) -> bool:
    """Pillow decodes the whole file as a PNG more than `wider_than` pixels wide."""
    with Image.open(path) as picture:
        picture.load()
        return picture.format == "PNG" and picture.size[0] > wider_than


def png_title(path) -> str | None:
    """The Title text a PNG carries (matplotlib writes it from savefig's metadata)."""
    with Image.open(path) as picture:
        return picture.text.get("Title")


def image_as_asked(batch) -> Blob:
    """A blank image of the size and format a worker's batch (a worker_messages.Generate) asks for: the engine serves
    no other."""
    return blank_image(batch.width, batch.height, batch.output_format)


@functools.cache
def blank_image(width: int, height: int, output_format: str) -> Blob:
    return Blob(encode_image(Image.new("RGB", (width, height)), output_format))

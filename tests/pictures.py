"""What the tests check of a picture the code wrote."""

from PIL import Image


def opens_as_png(path, wider_than: int = 0) -> bool:
    """Pillow decodes the whole file as a PNG more than `wider_than` pixels wide."""
    with Image.open(path) as picture:
        picture.load()
        return picture.format == "PNG" and picture.size[0] > wider_than

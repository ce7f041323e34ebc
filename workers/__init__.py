"""The process per device: a blocking loop around one generation backend."""

import logging


class _ImageProcessorFallbackNotice(logging.Filter):
    """transformers 5 warns, as diffusers imports it, that its image processors fall back to PIL without
    torchvision: two lines in every worker's start that name nothing argus runs (SD-XL text-to-image uses no image
    processor), so a user would look for a fault that is not there. Set here, before any worker module imports
    diffusers; every other transformers warning still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_ImageProcessorFallbackNotice())

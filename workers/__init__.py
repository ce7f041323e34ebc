"""The process per device: a blocking loop around one generation backend."""

from workers.library_notices import drop_library_notices

drop_library_notices()

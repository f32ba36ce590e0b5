"""Where model weights live on disk: the expected layouts, their checks, and the download."""

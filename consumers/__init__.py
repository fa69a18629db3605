"""Consumer workers over one shared consumer-group runner (``consumers.runner``)."""

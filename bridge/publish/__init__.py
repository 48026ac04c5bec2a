"""The publishing core: the registry plan, the pipeline driver, metadata updates."""

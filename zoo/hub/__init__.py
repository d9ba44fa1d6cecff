"""Weight sets: records and manifest (``spec``), verified files and the cache (``cache``),
resolving ``weights=`` and loading (``loading``)."""

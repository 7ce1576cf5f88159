"""RQ entry points: importable functions taking small JSON-serialisable arguments (ids, paths, versions)."""

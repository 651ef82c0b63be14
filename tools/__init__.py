"""Project tools beside the library: weekly-log freshness (logs_status) and GPU reference runs (gpu_refs)."""

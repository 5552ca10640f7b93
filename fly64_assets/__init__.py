"""fly64_assets: a Dagster code location for the fly64 dose/overlap ptychography study."""

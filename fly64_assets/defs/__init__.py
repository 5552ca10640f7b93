"""The Dagster layer: thin assets and checks over the pure modules of ``fly64_assets``."""

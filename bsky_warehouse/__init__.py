"""bsky-warehouse: a research data warehouse for Bluesky posts."""

__version__ = "0.1.0"

"""ocistore.metadata."""

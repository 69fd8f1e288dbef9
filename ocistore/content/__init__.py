"""ocistore.content."""

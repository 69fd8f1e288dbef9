"""ocistore.images."""

"""ocistore.transfer."""

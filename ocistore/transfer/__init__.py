"""The operations users call: fetch, pull, unpack, containers, import, export, check, usage.

Each takes the store's :class:`~ocistore.transfer.context.OperationContext` (see
docs/architecture.md). Modules load on first use from :class:`ocistore.Store`.
"""

DEFAULT_THRESHOLD = 150 << 20
"""Compressed bytes below which ``pull(unpack="auto")`` unpacks an image (150 MiB)."""

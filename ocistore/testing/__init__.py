"""Conformance suites that every implementation runs (as containerd's testsuite packages).

``ocistore.testing.content_suite.ContentStoreSuite`` and
``ocistore.testing.snapshot_suite`` are importable by third-party backends; they need pytest.
"""

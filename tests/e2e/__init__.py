"""End-to-end tests against a real Label Studio (a package, so tests can import helpers from its conftest)."""

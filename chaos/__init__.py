"""A fault-injection run against the real stack (`make chaos`); see README and docs/operations.md."""

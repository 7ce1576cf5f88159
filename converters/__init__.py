"""Label Studio tasks → cleaned ms-swift JSONL, and the screenshot-mark detector (see docs/architecture.md)."""

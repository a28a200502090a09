"""Browser tests use the session's Chromium from the root conftest.py (fixtures `browser` and `page`)."""

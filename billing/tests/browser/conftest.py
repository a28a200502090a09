"""Browser tests use the session's Chromium from the root conftest.py (fixtures `browser` and `page`); the admin
pages' tests also use the portal's axe-core, page and screenshot fixtures."""

from portal.tests.browser.conftest import axe, axe_source, new_page, screenshots_dir  # noqa: F401

from portal.tests.browser.conftest import axe, axe_source, new_page, screenshots_dir  # noqa: F401

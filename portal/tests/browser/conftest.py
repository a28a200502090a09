"""Browser-test fixtures for the portal: pages in chosen viewports with or without JavaScript, and axe-core
injected from node_modules. The session's Chromium (`browser`, `page`) comes from the root conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


@pytest.fixture
def new_page(browser):
    """new_page(viewport=…, javascript=…): a page in a fresh context (own cookies), closed after the test."""
    contexts = []

    def make(*, viewport: dict | None = None, javascript: bool = True):
        context = browser.new_context(viewport=viewport or DESKTOP, java_script_enabled=javascript)
        context.set_default_timeout(5_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def axe_source() -> Path:
    if not AXE.exists():
        pytest.skip(f"needs axe-core at {AXE.relative_to(ROOT)}: run `npm ci --no-audit --no-fund` at the project "
                    "root (make test does)")
    return AXE


@pytest.fixture
def axe(axe_source):
    """axe(page) → the page's axe-core violations, each {id, impact, help, targets}."""

    def run(target) -> list[dict]:
        if not target.evaluate("() => typeof window.axe === 'object'"):
            target.add_script_tag(path=str(axe_source))
        return target.evaluate("""async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                targets: v.nodes.map(n => n.target.join(" "))}));
        }""")

    return run


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS

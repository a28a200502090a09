"""Every portal page in a real browser: axe-core finds nothing serious, and screenshots at desktop and phone
sizes (test-artifacts/screenshots/) where the phone page never scrolls sideways (wide tables scroll inside
their own container)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from portal.tests.browser.conftest import DESKTOP, PHONE
from portal.tests.browser.support import portal_setup, sign_in, tour

pytestmark = pytest.mark.django_db(transaction=True)

VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}

# Where each page overflows the screen, if it does: elements sticking out past the viewport's right edge
# that are not inside a container scrolling on its own; and wide containers that do not scroll.
OVERFLOW_JS = """() => {
    const width = document.documentElement.clientWidth;
    const name = el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
        + (el.classList.length ? "." + [...el.classList].join(".") : "");
    const scrollsItself = el => ["auto", "scroll"].includes(getComputedStyle(el).overflowX);
    const insideScroller = el => {
        for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) if (scrollsItself(p)) return true;
        return false;
    };
    const sticking = [...document.body.querySelectorAll("*")]
        .filter(el => el.getBoundingClientRect().right > width + 0.5 && !insideScroller(el)
                      && !el.closest(".visually-hidden"))
        .map(el => `${name(el)} (right edge ${Math.round(el.getBoundingClientRect().right)} px: `
                   + `${JSON.stringify((el.innerText || "").slice(0, 40))})`);
    const tables = [...document.querySelectorAll("table")].map(t => t.parentElement)
        .filter(box => box.scrollWidth > box.clientWidth + 0.5 && !scrollsItself(box)).map(name);
    return {width, scrollWidth: document.documentElement.scrollWidth, sticking: sticking.slice(0, 6), tables};
}"""


def every_page(new_page, live_server, viewport: dict) -> Iterator[tuple[str, object]]:
    """(name, page) for each portal page, loaded: signed out, as the owner, and the member's plans page."""
    s = portal_setup()
    urls = tour(live_server, s)
    page = new_page(viewport=viewport)
    page.goto(urls.pop("login"))
    yield "login", page
    sign_in(page, live_server, s.owner)
    for name, url in urls.items():
        page.goto(url)
        yield name, page
    member = new_page(viewport=viewport)
    sign_in(member, live_server, s.member)
    member.goto(urls["plans"])
    yield "plans-member", member


def describe(found: dict[str, list[dict]]) -> str:
    return "\n".join(f"{page}: {v['id']} ({v['impact']}) {v['help']} at {', '.join(v['targets'][:5])}"
                     for page, violations in found.items() for v in violations)


def test_axe_is_really_checking(new_page, axe):
    """A page with known faults: if axe were not injected or not running, the checks below would prove nothing."""
    page = new_page()
    page.set_content('<html lang="en"><body><main><input type="text"><img src="x.png"></main></body></html>')
    ids = {v["id"] for v in axe(page)}
    assert {"label", "image-alt"} <= ids, ids


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_no_serious_or_critical_accessibility_violations(live_server, new_page, axe: Callable, viewport):
    found, minor, checked = {}, {}, []
    for name, page in every_page(new_page, live_server, VIEWPORTS[viewport]):
        checked.append(name)
        for violation in axe(page):
            bucket = found if violation["impact"] in ("serious", "critical") else minor
            bucket.setdefault(name, []).append(violation)
    assert len(checked) == 10, checked
    if minor:
        print(f"axe, minor or moderate ({viewport}):\n{describe(minor)}")
    assert not found, f"axe-core, serious or critical ({viewport}):\n{describe(found)}"


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_screenshots_and_no_sideways_scrolling(live_server, new_page, screenshots_dir, viewport):
    overflowing = {}
    for name, page in every_page(new_page, live_server, VIEWPORTS[viewport]):
        page.screenshot(path=str(screenshots_dir / f"{name}-{viewport}.png"), full_page=True)
        if name == "plans" and viewport == "phone":
            # The wide comparison table is the allowed exception: it scrolls inside its own box. Seen scrolled
            # to its far end, the sticky first column shows.
            wrap = page.locator(".matrix-wrap")
            assert wrap.evaluate("box => box.scrollWidth > box.clientWidth")
            assert wrap.evaluate("box => getComputedStyle(box).overflowX") in ("auto", "scroll")
            wrap.evaluate("box => { box.scrollLeft = box.scrollWidth }")
            page.screenshot(path=str(screenshots_dir / "plans-scrolled-phone.png"), full_page=True)
            wrap.evaluate("box => { box.scrollLeft = 0 }")
        report = page.evaluate(OVERFLOW_JS)
        if report["scrollWidth"] > report["width"] or report["sticking"] or report["tables"]:
            overflowing[name] = report
    assert not overflowing, "\n".join(f"{name}: {report}" for name, report in overflowing.items())


def test_receipt_fits_a_phone(live_server, new_page):
    s = portal_setup()
    urls = tour(live_server, s)
    page = new_page(viewport=PHONE)
    sign_in(page, live_server, s.owner)
    page.goto(urls["success"])
    report = page.evaluate(OVERFLOW_JS)
    assert report["scrollWidth"] <= report["width"], report

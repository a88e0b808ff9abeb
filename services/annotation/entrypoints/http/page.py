"""`GET /`: the annotation page, one HTML file with its CSS and JavaScript inline (`entrypoints/page.html`)."""

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

# The page loads nothing from elsewhere: inline script and style, media from this origin only.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@functools.cache
def _page() -> str:
    return resources.files("services.annotation.entrypoints").joinpath("page.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, summary="The annotation page (plain HTML and inline JavaScript)")
def index() -> HTMLResponse:
    return HTMLResponse(_page(), headers={"Cache-Control": "no-store", "Content-Security-Policy": _PAGE_POLICY})

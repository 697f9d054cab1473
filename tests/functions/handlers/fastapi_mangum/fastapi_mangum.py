"""A FastAPI app behind Mangum, as deployed on AWS Lambda (``handler = Mangum(app)``), unchanged.

The same routes are mounted under /fastapi/v2 and /fastapi/v1: the gateway sends the first
prefix as HTTP API events (payload 2.0) and the second as REST API events (payload 1.0), and
`/whoami` reports which event format the app was given.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import PlainTextResponse
from mangum import Mangum
from pydantic import BaseModel, Field

GREETING = "Grüße aus Köln — 東京 ✓"
# A PNG signature and every byte value: a body that is not text (Mangum base64-encodes it).
PIXEL = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


class Order(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


router = APIRouter()


@router.get("/items/{item_id}")
def read_item(
    item_id: int,
    request: Request,
    q: str | None = None,
    tag: Annotated[list[str] | None, Query()] = None,
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "q": q,
        "tags": tag or [],
        "cookies": dict(request.cookies),
        "client_tag": request.headers.get("x-client-tag"),
        "client": request.client.host if request.client else None,
    }


@router.post("/orders", status_code=201)
def create_order(order: Order, response: Response) -> dict[str, Any]:
    response.headers["Location"] = f"/orders/{order.sku}"
    response.set_cookie("last_order", order.sku, httponly=True)
    return {"sku": order.sku, "quantity": order.quantity}


@router.get("/teapot")
def teapot() -> None:
    raise HTTPException(status_code=418, detail="I'm a teapot", headers={"X-Reason": "short and stout"})


@router.get("/greeting", response_class=PlainTextResponse)
def greeting() -> str:
    return GREETING


@router.get("/users/{name}")
def user(name: str) -> dict[str, str]:
    return {"name": name}


@router.get("/pixel")
def pixel() -> Response:
    return Response(content=PIXEL, media_type="image/png")


@router.post("/reverse")
async def reverse(request: Request) -> Response:
    return Response(content=(await request.body())[::-1], media_type="application/octet-stream")


@router.get("/whoami")
def whoami(request: Request) -> dict[str, Any]:
    event = request.scope["aws.event"]
    return {"payload": event.get("version"), "has_raw_path": "rawPath" in event}


app = FastAPI()
app.include_router(router, prefix="/fastapi/v2")
app.include_router(router, prefix="/fastapi/v1")

handler = Mangum(app)

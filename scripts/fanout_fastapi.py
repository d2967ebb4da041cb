"""The Python prototype's live fan-out, for `make bench-fanout`.

One uvicorn worker; a ConnectionManager that keeps every socket in a list
and, to broadcast, loops over it awaiting each send, as the prototype (and
FastAPI's own WebSocket guide) does. `POST /publish` broadcasts each event
of its body to every connected socket, one after the other.
"""

import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


class ConnectionManager:
    def __init__(self) -> None:
        self.active: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active.append(websocket)

    def disconnect(self, websocket: WebSocket) -> None:
        self.active.remove(websocket)

    async def broadcast(self, message: str) -> None:
        for connection in list(self.active):
            await connection.send_text(message)


manager = ConnectionManager()


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await manager.connect(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket)


@app.post("/publish")
async def publish(body: dict) -> dict:
    """Broadcasts each of `events` in turn: `{"events": [{...}, ...]}`."""
    for event in body.get("events", []):
        await manager.broadcast(json.dumps(event, separators=(",", ":"), sort_keys=True))
    return {"sent": len(manager.active)}

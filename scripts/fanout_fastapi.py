"""The Python prototype's live fan-out, for `make bench-fanout`.

One uvicorn worker; a ConnectionManager that keeps every topic's sockets in
a list and, to broadcast, loops over them awaiting each send, as the
prototype (and FastAPI's own WebSocket guide) does. A client follows the
topic named in its URL (`/ws?topic=7`; none: the topic ""). `POST /publish`
broadcasts each event of its body, one after the other, to every socket of
its `topic`.
"""

import json
from collections import defaultdict

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


class ConnectionManager:
    def __init__(self) -> None:
        self.active: dict[str, list[WebSocket]] = defaultdict(list)

    async def connect(self, websocket: WebSocket, topic: str) -> None:
        await websocket.accept()
        self.active[topic].append(websocket)

    def disconnect(self, websocket: WebSocket, topic: str) -> None:
        self.active[topic].remove(websocket)

    async def broadcast(self, topic: str, message: str) -> int:
        sockets = list(self.active.get(topic, []))
        for connection in sockets:
            await connection.send_text(message)
        return len(sockets)


manager = ConnectionManager()


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket, topic: str = "") -> None:
    await manager.connect(websocket, topic)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        manager.disconnect(websocket, topic)


@app.post("/publish")
async def publish(body: dict) -> dict:
    """Broadcasts each of `events` in turn: `{"topic": "7", "events": [{...}, ...]}`."""
    topic = str(body.get("topic", ""))
    sent = 0
    for event in body.get("events", []):
        sent = await manager.broadcast(topic, json.dumps(event, separators=(",", ":"), sort_keys=True))
    return {"sent": sent}

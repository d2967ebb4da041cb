// The WebSocket protocol (docs/websocket.md, `sextant.v1`): one socket per
// tab carries every live topic. It keeps the last `version` of each
// subscription and, after any close but 1000, reconnects with full-jitter
// exponential backoff inside the `reconnect` window of the last `hello`
// (after a `goodbye`, its `reconnect_after_ms` first), then subscribes again
// with `after_version`, so a view sees nothing twice and nothing missed.

const PROTOCOL = "sextant.v1";

export class LiveSocket {
  /** `token`: the bearer; `onState({up, reason})`: the connection's state. */
  constructor(token, onState = () => {}) {
    this.token = token;
    this.onState = onState;
    // One stream per topic (and metric query), however many views follow
    // it: the server holds a topic once per socket.
    this.streams = new Map(); // key → {key, ids, topic, query, name, version, listeners}
    this.nextId = 1;
    this.attempt = 0;
    this.window = { min_delay_ms: 1000, max_delay_ms: 30000 };
    this.closed = false;
    this.hello = null;
    this.connect();
  }

  connect() {
    const url = new URL("/api/v1/ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url, [PROTOCOL, `bearer.${this.token}`]);
    this.ws = ws;
    ws.onmessage = (m) => this.onMessage(JSON.parse(m.data));
    ws.onclose = (e) => this.onClose(e);
  }

  onMessage(frame) {
    if (frame.type === "hello") {
      this.hello = frame;
      this.window = frame.reconnect || this.window;
      this.attempt = 0;
      this.goodbyeDelay = undefined;
      this.onState({ up: true, hello: frame });
      for (const stream of this.streams.values()) {
        stream.ids.clear();
        this.send(stream);
      }
      this.keepAlive(frame.idle_timeout_ms);
      return;
    }
    if (frame.type === "goodbye") {
      this.goodbyeDelay = frame.reconnect_after_ms;
      return;
    }
    if (frame.type === "pong") return;
    const stream = this.streamOf(frame);
    if (!stream) {
      // A stream given up before the server confirmed it: let it go.
      if (frame.type === "subscribed") this.ws.send(JSON.stringify({ op: "unsubscribe", topic: frame.topic }));
      return;
    }
    if (frame.type === "subscribed") stream.name = frame.topic;
    if (typeof frame.version === "number") stream.version = frame.version;
    for (const listener of stream.listeners) listener(frame);
  }

  /** The stream a frame belongs to: by its op's id, else by topic name. */
  streamOf(frame) {
    for (const stream of this.streams.values()) {
      if (frame.id !== undefined ? stream.ids.has(String(frame.id)) : stream.name === frame.topic) return stream;
    }
    return null;
  }

  onClose(event) {
    clearInterval(this.pinger);
    if (this.closed) return;
    const reasons = {
      1001: "the gateway is restarting", 1006: "the connection dropped", 4000: "idle",
      4001: "heartbeat timeout", 4008: "too slow to keep up", 4029: "too many connections for this user",
    };
    const reason = reasons[event.code] || `closed (${event.code})`;
    this.onState({ up: false, reason, code: event.code });
    const cap = Math.min(this.window.max_delay_ms, this.window.min_delay_ms * 2 ** this.attempt);
    const delay = this.goodbyeDelay ?? Math.random() * cap;
    this.goodbyeDelay = undefined;
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** A socket without subscriptions pings inside the idle timeout. */
  keepAlive(idleMs) {
    clearInterval(this.pinger);
    this.pinger = setInterval(() => {
      if (this.streams.size === 0 && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ op: "ping" }));
      }
    }, Math.max(1000, (idleMs || 300000) / 3));
  }

  /** Subscribes `stream` (again): from its last version, or afresh with `fresh`. */
  send(stream, fresh = false) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const id = `s${this.nextId++}`;
    stream.ids.add(id);
    const op = { op: "subscribe", id, topic: stream.name || stream.topic };
    if (stream.query && !stream.name) op.query = stream.query;
    if (stream.version && !fresh) op.after_version = stream.version;
    this.ws.send(JSON.stringify(op));
  }

  /**
   * Follows a topic (`jobs`, `job:<id>`, `alerts`, `alert:<id>`, or
   * `metric` with `query`); `onFrame` gets every frame of it. Returns a
   * function that unsubscribes. A second view of a topic already followed
   * shares its stream, which restarts with a fresh snapshot for everyone.
   */
  subscribe(topic, onFrame, query) {
    const key = `${topic} ${JSON.stringify(query ?? null)}`;
    let stream = this.streams.get(key);
    if (stream) {
      stream.listeners.add(onFrame);
      if (stream.name) this.send(stream, true);
    } else {
      stream = { key, ids: new Set(), topic, query, name: null, version: 0, listeners: new Set([onFrame]) };
      this.streams.set(key, stream);
      this.send(stream);
    }
    return () => {
      stream.listeners.delete(onFrame);
      if (stream.listeners.size || this.streams.get(key) !== stream) return;
      this.streams.delete(key);
      if (stream.name && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ op: "unsubscribe", topic: stream.name }));
      }
    };
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.pinger);
    this.ws?.close(1000);
  }
}

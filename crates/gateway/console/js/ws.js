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
    this.subs = new Map(); // key → {topic, query, version, onFrame, name}
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
      for (const sub of this.subs.values()) this.send(sub);
      this.keepAlive(frame.idle_timeout_ms);
      return;
    }
    if (frame.type === "goodbye") {
      this.goodbyeDelay = frame.reconnect_after_ms;
      return;
    }
    if (frame.type === "pong") return;
    for (const sub of this.matching(frame)) {
      if (frame.type === "subscribed") sub.name = frame.topic;
      if (typeof frame.version === "number") sub.version = frame.version;
      sub.onFrame(frame);
    }
  }

  /**
   * The subscriptions a frame belongs to: the op's, by its id; and every
   * one following its topic (two views may follow the same topic, which
   * the server holds once per socket).
   */
  matching(frame) {
    const byId = frame.id !== undefined ? this.subs.get(String(frame.id)) : undefined;
    const found = [...this.subs.values()].filter((s) => s.name === frame.topic || (!s.query && s.topic === frame.topic));
    if (byId && !found.includes(byId)) found.push(byId);
    return found;
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
      if (this.subs.size === 0 && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ op: "ping" }));
      }
    }, Math.max(1000, (idleMs || 300000) / 3));
  }

  send(sub) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const op = { op: "subscribe", id: sub.key, topic: sub.name || sub.topic };
    if (sub.query && !sub.name) op.query = sub.query;
    if (sub.version) op.after_version = sub.version;
    this.ws.send(JSON.stringify(op));
  }

  /**
   * Follows a topic (`jobs`, `job:<id>`, `alerts`, `alert:<id>`, or
   * `metric` with `query`); `onFrame` gets every frame of it. Returns a
   * function that unsubscribes.
   */
  subscribe(topic, onFrame, query) {
    const key = `s${this.nextId++}`;
    const sub = { key, topic, query, version: 0, onFrame, name: null };
    this.subs.set(key, sub);
    this.send(sub);
    return () => {
      this.subs.delete(key);
      const topic = sub.name || sub.topic;
      const shared = [...this.subs.values()].some((s) => (s.name || s.topic) === topic);
      if (!shared && topic !== "metric" && this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ op: "unsubscribe", topic }));
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

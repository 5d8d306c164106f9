// The REST API client: the token (kept in sessionStorage for the browser session),
// requests with problem+json errors turned into sentences, and the live event stream.
//
// The stream is read with fetch() and the Authorization header rather than
// EventSource: EventSource delivers only the event names it was told in advance
// (Ferry names every event by its kind), and its automatic reconnect would reuse a
// single-use ticket. Reading the stream ourselves keeps the token out of URLs and
// resumes exactly where it stopped (`?since=` the last seq seen).

const BASE = "/api/v1";
const KEY = "ferry.token";

export const session = {
  token: sessionStorage.getItem(KEY),
  me: null,
  set(token) { this.token = token; sessionStorage.setItem(KEY, token); },
  clear() { this.token = null; this.me = null; sessionStorage.removeItem(KEY); },
};

const RANK = { viewer: 0, operator: 1, admin: 2 };
/** Whether the logged-in token's role is at least `role`. */
export function can(role) {
  return !!session.me && RANK[session.me.role] >= RANK[role];
}

/** An API refusal: the problem body, and a sentence for people. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `the control plane answered ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.code = this.problem.code || (status === 0 ? "unreachable" : "http_" + status);
  }
  /** The detail, with each reason's sentence. */
  get sentences() {
    const out = [sentence(this.message)];
    for (const r of this.problem.reasons || []) out.push(sentence(r.detail || r.code));
    return out;
  }
}

function sentence(s) {
  s = String(s || "").trim();
  if (!s) return s;
  s = s[0].toUpperCase() + s.slice(1);
  return /[.!?]$/.test(s) ? s : s + ".";
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

/** One API call; resolves to the JSON body (or text for text/plain), throws ApiError. */
export async function api(method, path, body, { token = session.token, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(BASE + path, {
      method, headers, signal,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { detail: "the control plane cannot be reached (" + e.message + ")" });
  }
  const type = resp.headers.get("content-type") || "";
  const data = type.includes("json") ? await resp.json().catch(() => null)
    : await resp.text();
  if (!resp.ok) {
    const err = new ApiError(resp.status, typeof data === "object" ? data : { detail: data });
    if (resp.status === 401 && token === session.token) onUnauthorized(err);
    throw err;
  }
  return data;
}

export const get = (p, o) => api("GET", p, undefined, o);
export const post = (p, b, o) => api("POST", p, b === undefined ? {} : b, o);

/** Builds `?a=1&b=2` from an object, leaving out empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") u.set(k, v);
  }
  const s = u.toString();
  return s ? "?" + s : "";
}

/** Every page of a list (for small collections: hosts, clusters, datastores). */
export async function all(path, params = {}) {
  const items = [];
  let cursor;
  do {
    const page = await get(path + qs({ ...params, limit: 1000, cursor }));
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

/** Polls a task until it ends; resolves to the finished task. */
export async function waitTask(id, { timeoutMs = 10 * 60 * 1000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const t = await get("/tasks/" + id);
    if (["succeeded", "failed", "cancelled"].includes(t.state)) return t;
    if (Date.now() > deadline) return t;
    await new Promise((r) => setTimeout(r, 400));
  }
}

/**
 * The live event stream. Listeners get every event object; `onState` hears
 * "live", "reconnecting" and "down". It reconnects by itself (1 s, then up to 5 s
 * apart) and resumes after the last seq it delivered; `onResync` is called after
 * every reconnect, so views reload what they show (the control plane may have
 * restarted and anything may have changed).
 */
export class EventStream {
  constructor() {
    this.listeners = new Set();
    this.stateListeners = new Set();
    this.resyncListeners = new Set();
    this.since = null;
    this.state = "connecting";
    this.abort = null;
    this.stopped = false;
  }
  on(f) { this.listeners.add(f); return () => this.listeners.delete(f); }
  onState(f) { this.stateListeners.add(f); f(this.state); return () => this.stateListeners.delete(f); }
  onResync(f) { this.resyncListeners.add(f); return () => this.resyncListeners.delete(f); }
  setState(s) {
    if (s === this.state) return;
    this.state = s;
    for (const f of this.stateListeners) f(s);
  }
  stop() { this.stopped = true; this.abort?.abort(); }

  async start() {
    this.stopped = false;
    // Start from the newest event: the dashboard shows the present, not the backlog.
    let delay = 1000;
    let first = true;
    while (!this.stopped) {
      try {
        if (this.since === null) {
          const latest = await get("/events" + qs({ newest_first: true, limit: 1 }));
          this.since = latest.items[0]?.seq ?? 0;
        }
        this.abort = new AbortController();
        const resp = await fetch(BASE + "/events/stream" + qs({ since: this.since }), {
          headers: { Authorization: "Bearer " + session.token, Accept: "text/event-stream" },
          signal: this.abort.signal,
        });
        if (resp.status === 401) { onUnauthorized(new ApiError(401, {})); return; }
        if (!resp.ok || !resp.body) throw new Error("stream answered " + resp.status);
        this.setState("live");
        if (!first) for (const f of this.resyncListeners) f();
        first = false;
        delay = 1000;
        await this.read(resp.body);
      } catch (e) {
        if (this.stopped) return;
      }
      if (this.stopped) return;
      this.setState(this.state === "live" || this.state === "connecting" ? "reconnecting" : "down");
      first = false;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("stream ended");
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue; // keep-alive comment
        let ev;
        try { ev = JSON.parse(data); } catch { continue; }
        if (typeof ev.seq === "number") this.since = Math.max(this.since ?? 0, ev.seq);
        for (const f of this.listeners) {
          try { f(ev); } catch (e) { console.error(e); }
        }
      }
    }
  }
}

export const events = new EventStream();

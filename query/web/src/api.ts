// The JSON API client (query/web/API.md): query strings, errors, the 401 login flow,
// and Ctx, which ties a view's requests to its lifetime and its data-loading flag.
import { h } from "./dom";

export type QValue = string | number | boolean | null | undefined | (string | number)[];
export type Query = Record<string, QValue>;

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string,
              readonly position?: number) {
    super(message);
  }
}

/** `?a=1&b=x&b=y` from an object; arrays repeat, empty values are left out. */
export function qs(q: Query = {}): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === null || v === undefined || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => p.append(k, String(x)));
    else p.append(k, typeof v === "boolean" ? (v ? "1" : "0") : String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

export const enc = encodeURIComponent;

let login: Promise<void> | null = null;

/** Show the token form (once for all pending requests); resolves after a 204 login. */
function askToken(): Promise<void> {
  if (login) return login;
  login = new Promise<void>((resolve) => {
    const input = h("input", { type: "password", testid: "login-token", placeholder: "token",
                               autocomplete: "current-password" });
    const msg = h("div", { class: "login-error" });
    const form = h("form", { class: "login", testid: "login-form" },
      h("h2", null, "Runstream: sign in"),
      h("p", null, "This server needs its access token (RUNSTREAM_TOKEN)."),
      input, h("button", { type: "submit", testid: "login-submit" }, "Sign in"), msg);
    const overlay = h("div", { class: "overlay" }, form);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const r = await fetch("/api/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: input.value }), credentials: "same-origin",
      });
      if (r.status === 204 || r.ok) {
        overlay.remove();
        login = null;
        resolve();
      } else {
        msg.textContent = "The token was refused.";
        msg.setAttribute("data-testid", "login-error");
      }
    });
    document.body.appendChild(overlay);
    input.focus();
  });
  return login;
}

async function toError(r: Response): Promise<ApiError> {
  try {
    const body = await r.json();
    const e = body?.error ?? {};
    return new ApiError(r.status, String(e.code ?? r.status), String(e.message ?? r.statusText),
                        typeof e.position === "number" ? e.position : undefined);
  } catch {
    return new ApiError(r.status, String(r.status), r.statusText || `HTTP ${r.status}`);
  }
}

/** GET a JSON endpoint; on 401 asks for the token and retries. */
export async function getJSON<T>(path: string, q?: Query, signal?: AbortSignal): Promise<T> {
  for (;;) {
    performance.mark(`rs:fetch:${path}`);
    const r = await fetch(path + qs(q), { signal, credentials: "same-origin",
                                          headers: { Accept: "application/json" } });
    if (r.status === 401) { await askToken(); continue; }
    if (!r.ok) throw await toError(r);
    return (await r.json()) as T;
  }
}

/** GET text (an artifact); null on 404. */
export async function getText(path: string, signal?: AbortSignal): Promise<string | null> {
  for (;;) {
    const r = await fetch(path, { signal, credentials: "same-origin" });
    if (r.status === 401) { await askToken(); continue; }
    if (r.status === 404) return null;
    if (!r.ok) throw await toError(r);
    return await r.text();
  }
}

/** One mounted view's lifetime: aborts its requests and runs its cleanups on dispose,
 * and keeps `data-loading` on the view root in step with its requests in flight. */
export class Ctx {
  readonly ac = new AbortController();
  private pending = 0;
  private cleanups: (() => void)[] = [];
  dead = false;

  constructor(readonly root: HTMLElement) { this.mark(); }

  private mark(): void {
    if (!this.dead) this.root.dataset.loading = this.pending > 0 ? "1" : "0";
  }

  /** Count a promise as loading work of this view. */
  async track<T>(p: Promise<T>): Promise<T> {
    this.pending++;
    this.mark();
    try { return await p; } finally { this.pending--; this.mark(); }
  }

  get<T>(path: string, q?: Query): Promise<T> {
    return this.track(getJSON<T>(path, q, this.ac.signal));
  }

  onDispose(fn: () => void): void { this.cleanups.push(fn); }

  dispose(): void {
    this.dead = true;
    this.ac.abort();
    for (const fn of this.cleanups.splice(0)) {
      try { fn(); } catch (e) { console.error(e); }
    }
  }
}

/** The error box a view shows for a failed request. */
export function errorBox(e: unknown): HTMLElement {
  const err = e instanceof ApiError ? e : null;
  const msg = err ? err.message : e instanceof Error ? e.message : String(e);
  return h("div", { class: "error", testid: "error-box", "data-code": err?.code ?? "ERROR" },
    err ? h("b", null, `${err.code}: `) : null, msg);
}

export const isAbort = (e: unknown): boolean =>
  e instanceof DOMException && e.name === "AbortError";

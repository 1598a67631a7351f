// Hash routing: "#/run/ID?tab=metrics". The hash is the whole state of a view.
import { qs, type Query } from "./api";

export interface Route { parts: string[]; params: URLSearchParams }

export function parseHash(hash = location.hash): Route {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  return { parts, params };
}

/** "#/run/a%2Fb?tab=x" from path parts and a query. */
export function href(parts: string[], q: Query = {}): string {
  return `#/${parts.map(encodeURIComponent).join("/")}${qs(q)}`;
}

/** Rewrite the current hash's query without a navigation (the view updates itself). */
export function replaceQuery(q: Query): void {
  const { parts } = parseHash();
  history.replaceState(null, "", href(parts, q));
}

/** A query object from URLSearchParams (repeated keys become arrays). */
export function toQuery(p: URLSearchParams): Query {
  const out: Query = {};
  for (const k of new Set(p.keys())) {
    const all = p.getAll(k);
    out[k] = all.length > 1 ? all : all[0];
  }
  return out;
}

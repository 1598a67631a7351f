// Tiny DOM helpers: h() builds elements, fmt* format numbers, times and sizes.

export type Child = Node | string | number | null | undefined | false | Child[];
export type Attrs = Record<string, unknown>;

/** Build an element: `testid` sets data-testid, `on*` functions are listeners, `class`
 * is the class name, `value`/`checked`/`disabled`/`selected` are properties. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs?: Attrs | null, ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") {
        el.addEventListener(k.slice(2), v as EventListener);
      } else if (k === "testid") {
        el.setAttribute("data-testid", String(v));
      } else if (k === "class") {
        el.className = String(v);
      } else if (k === "value" || k === "checked" || k === "disabled" || k === "selected") {
        (el as unknown as Record<string, unknown>)[k] = v;
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

export function clear(el: Element, ...children: Child[]): void {
  el.textContent = "";
  append(el, children);
}

/** A number as short text: NaN/inf as words, integers plain, else 4 significant digits. */
export function fmtNum(x: unknown): string {
  if (x === null || x === undefined || x === "") return "";
  const n = Number(x);
  if (Number.isNaN(n)) return typeof x === "string" && x !== "NaN" ? x : "NaN";
  if (!Number.isFinite(n)) return n > 0 ? "inf" : "-inf";
  if (Number.isInteger(n) && Math.abs(n) < 1e15) return String(n);
  const a = Math.abs(n);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return n.toExponential(3);
  return String(Number(n.toPrecision(4)));
}

const pad = (n: number): string => String(n).padStart(2, "0");

/** Epoch ms as local "YYYY-MM-DD HH:MM:SS" ("" for 0). */
export function fmtTime(ms: number): string {
  if (!ms) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** A duration in ms as "1h 02m", "3m 05s", "4.2s". */
export function fmtDuration(ms: number): string {
  if (!(ms >= 0)) return "";
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${pad(Math.floor(s % 60))}s`;
  return `${Math.floor(m / 60)}h ${pad(m % 60)}m`;
}

export function fmtBytes(n: number): string {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function statusBadge(status: string): HTMLElement {
  return h("span", { class: `badge st-${status.toLowerCase()}`, testid: "status-badge" }, status);
}

/** A table from header names and rows of cells. */
export function table(testid: string, head: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  return h("table", { class: "grid", testid },
    h("thead", null, h("tr", null, head.map((c) => h("th", null, c)))),
    h("tbody", null, rows));
}

export const PALETTE = [
  "#2f6fdf", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#a87f00", "#5c7080",
  "#d6336c", "#1098ad",
];
export const color = (i: number): string => PALETTE[i % PALETTE.length];

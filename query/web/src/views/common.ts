// Pieces several views share: the ranks health table, settings in the hash, sections.
import { fmtBytes, fmtNum, fmtTime, h, statusBadge, table } from "../dom";
import type { ChartSettings, XMode } from "../chart";
import type { RankHealthReport } from "../types";

export function settingsFrom(p: URLSearchParams): ChartSettings {
  const x = p.get("x");
  const s = Number(p.get("smooth") ?? 0);
  return { xMode: (x === "wall" || x === "rel" ? x : "step") as XMode, logY: p.get("log") === "1",
           smoothing: Number.isFinite(s) ? Math.min(0.99, Math.max(0, s)) : 0 };
}

export function settingsQuery(s: ChartSettings): Record<string, string> {
  return { x: s.xMode === "step" ? "" : s.xMode, log: s.logY ? "1" : "",
           smooth: s.smoothing ? String(s.smoothing) : "" };
}

const sec = (x: unknown): string => {
  const n = Number(x);
  return n ? `${fmtNum(n)} s` : "";
};
const ms = (x: unknown): string => (Number(x) || Number.isNaN(Number(x)) ? fmtNum(x) : "0");

/** The RankHealthReport table; suspects highlighted (data-suspect="1"). */
export function ranksTable(r: RankHealthReport): HTMLElement {
  const suspects = new Set(r.suspects);
  const rows = r.ranks.map((k) => h("tr", {
    testid: "rank-row", "data-rank": k.rank, "data-suspect": suspects.has(k.rank) ? "1" : "0",
    class: suspects.has(k.rank) ? "suspect" : "" },
    h("td", null, String(k.rank)), h("td", null, k.node), h("td", null, statusBadge(k.status || "?")),
    h("td", null, fmtTime(k.last_seen_ms)), h("td", { class: "num" }, String(k.steps)),
    h("td", { class: "num" }, sec(k.step_time_p50_s)), h("td", { class: "num" }, sec(k.step_time_p95_s)),
    h("td", { class: "num" }, ms(k.lag_p50_ms)), h("td", { class: "num" }, ms(k.lag_p95_ms)),
    h("td", { class: "num" }, ms(k.lag_max_ms)), h("td", { class: "num" }, sec(k.data_wait_p50_s)),
    h("td", { class: "num" }, k.device_memory_max_bytes ? fmtBytes(k.device_memory_max_bytes) : ""),
    h("td", null, k.first_non_finite.map((f) => `${f.key}@${f.step}=${fmtNum(f.value)}`).join(", ")),
    h("td", { class: "problems" }, k.problems.join("; "))));
  return h("div", null,
    h("p", { class: "muted" },
      `attempt ${r.attempt}; median step time p50 ${sec(r.median_step_time_p50_s) || "n/a"}; ` +
      `lag key ${r.lag_key || "none"}; suspects: ${r.suspects.length ? r.suspects.join(", ") : "none"}`),
    table("ranks-table", ["rank", "node", "status", "last seen", "steps", "step p50", "step p95",
      "lag p50 ms", "lag p95 ms", "lag max ms", "data wait p50", "device mem", "first non-finite",
      "problems"], rows));
}

export function section(title: string, ...body: (Node | string | null)[]): HTMLElement {
  return h("section", { class: "card" }, h("h3", null, title), ...body);
}

/** key/value pairs as a two-column list. */
export function kv(testid: string, pairs: [string, Node | string | number | null | undefined][]): HTMLElement {
  return h("dl", { class: "kv", testid },
    pairs.filter(([, v]) => v !== "" && v !== null && v !== undefined)
      .map(([k, v]) => [h("dt", null, k), h("dd", null, typeof v === "number" ? String(v) : v)]));
}

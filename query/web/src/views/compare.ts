// Compare 2..50 runs: what differs, metric summaries (best highlighted), overlaid curves
// of one key (one history request for all runs) and parallel coordinates of the
// differing numeric params against a metric's best value.
import { Ctx, errorBox, isAbort } from "../api";
import { Chart, chartControls, fromHistory, maxPointsFor, type SeriesData } from "../chart";
import { clear, color, fmtNum, h } from "../dom";
import { hooks } from "../hooks";
import { href, replaceQuery } from "../route";
import type { Comparison, MetricHistory } from "../types";
import { section, settingsFrom, settingsQuery } from "./common";
import { drawParcoords } from "./parcoords";

const SECTIONS = ["param", "params", "code", "input", "package", "hardware", "environment", "tag", "run"];

export async function mountCompare(ctx: Ctx, root: HTMLElement, p: URLSearchParams): Promise<void> {
  const ids = [...new Set(p.getAll("run"))];
  let key = p.get("key") ?? "";
  let pkey = p.get("pkey") ?? "";
  let equal = p.get("equal") === "1";
  let settings = settingsFrom(p);
  const save = (): void => replaceQuery({ run: ids, key, pkey, equal: equal ? "1" : "",
                                          ...settingsQuery(settings) });
  if (ids.length < 2 || ids.length > 50) {
    root.append(h("div", { class: "error", testid: "error-box", "data-code": "INVALID_ARGUMENT" },
      `Compare needs 2 to 50 runs (got ${ids.length}). Select them in `,
      h("a", { href: "#/runs" }, "Runs"), "."));
    return;
  }
  root.append(h("div", { class: "loading", testid: "loading" }, "comparing…"));
  // With the key in the URL the curves' history request goes out with the comparison, at
  // a width estimated from the view (the chart spans the view, less the card's padding).
  const cmpP = ctx.get<Comparison>("/api/compare", { run: ids });
  const earlyKey = key;
  const earlyMp = maxPointsFor(Math.max(300, window.innerWidth - 32 - 16 - 26 - 14));
  const early = earlyKey ? ctx.get<{ series: MetricHistory[] }>("/api/history", {
    run: ids, key: earlyKey, max_points: earlyMp, aggregate: "mean" }) : null;
  early?.catch(() => undefined);
  let cmp: Comparison;
  try {
    cmp = await cmpP;
  } catch (e) {
    if (!isAbort(e)) clear(root, errorBox(e));
    return;
  }
  const runIds = cmp.runs.map((r) => r.run_id);
  const name = (i: number): string => cmp.runs[i].name || cmp.runs[i].run_id;
  const colorOf = new Map(runIds.map((r, i) => [r, color(i)]));
  const runHead = cmp.runs.map((r, i) => h("th", { class: "runcol" },
    h("i", { class: "sw", style: `background:${color(i)}` }),
    h("a", { href: href(["run", r.run_id]), title: r.run_id }, name(i))));

  // --- what differs
  const order = (s: string): number => { const i = SECTIONS.indexOf(s); return i < 0 ? 99 : i; };
  const fields = [...cmp.fields].sort((a, b) =>
    Number(b.differs) - Number(a.differs) || order(a.section) - order(b.section));
  const diffBody = h("tbody", null, fields.map((f) => h("tr", {
    testid: "diff-row", "data-section": f.section, "data-key": f.key,
    "data-differs": f.differs ? "1" : "0", class: f.differs ? "differs" : "equal",
    hidden: !f.differs && !equal },
    h("td", { class: "muted" }, f.section), h("td", null, f.key),
    f.values.map((v) => h("td", { title: v }, clampCell(v))))));
  const equalBox = h("input", { type: "checkbox", testid: "show-equal", checked: equal });
  equalBox.addEventListener("change", () => {
    equal = equalBox.checked;
    save();
    diffBody.querySelectorAll<HTMLElement>("tr.equal").forEach((tr) => { tr.hidden = !equal; });
  });
  const ndiff = fields.filter((f) => f.differs).length;

  // --- metric summary
  const summary = h("table", { class: "grid", testid: "metric-summary" },
    h("thead", null, h("tr", null, h("th", null, "metric"), h("th", null, "goal"), runHead.map((x) => x.cloneNode(true)))),
    h("tbody", null, cmp.metrics.map((m) => h("tr", { testid: "summary-row", "data-key": m.key,
                                                       "data-differs": m.differs ? "1" : "0" },
      h("td", null, m.key), h("td", { class: "muted" }, m.goal),
      m.stats.map((s, i) => h("td", { class: i === m.best_run ? "best" : "",
                                      "data-best": i === m.best_run ? "1" : "0" },
        s.present ? [h("b", null, fmtNum(s.best)), h("span", { class: "muted" }, ` @${s.best_step}`),
                     h("br"), h("span", { class: "muted" }, `last ${fmtNum(s.last)} @${s.last_step}`)]
          : h("span", { class: "muted" }, "—")))))));

  // --- curves
  const metricKeys = cmp.metrics.map((m) => m.key);
  if (!metricKeys.includes(key)) {
    key = metricKeys.includes("loss") ? "loss" : metricKeys.find((k) => /loss/.test(k)) ?? metricKeys[0] ?? "";
  }
  if (!metricKeys.includes(pkey)) pkey = key;
  const keySel = h("select", { testid: "compare-key" },
    metricKeys.map((k) => h("option", { value: k, selected: k === key }, k)));
  const chartBox = h("div");
  let chart: Chart | null = null;
  const toSeries = (r: { series: MetricHistory[] }): SeriesData[] => r.series.flatMap((s) =>
    fromHistory(s, () => name(runIds.indexOf(s.run_id)), () => colorOf.get(s.run_id)));
  const history = (start: number | null, end: number | null, mp: number) =>
    ctx.get<{ series: MetricHistory[] }>("/api/history", {
      run: runIds, key, max_points: mp, aggregate: "mean",
      start_step: start ?? undefined, end_step: end ?? undefined,
    }).then(toSeries);
  let useEarly = !!early && earlyKey === key;
  const loadCurves = async (): Promise<void> => {
    chart?.destroy();
    clear(chartBox);
    if (!key) { chartBox.append(h("div", { class: "muted" }, "No metrics.")); return; }
    chart = new Chart({ id: "compare", title: `${key} (mean over ranks)`, ctx, settings,
                        height: 320, refetch: history });
    chartBox.append(chart.el);
    let mp = maxPointsFor(chart.width() || 800);
    try {
      let series: SeriesData[] | null = null;
      if (useEarly && early) {
        useEarly = false;
        try {
          series = toSeries(await early);
          mp = earlyMp;
        } catch (e) {
          if (isAbort(e)) throw e;
          series = null; // asked before the key was checked: ask again below
        }
      }
      series ??= await history(null, null, mp);
      chart.countFetch(mp);
      chart.setSeries(series);
    } catch (e) {
      if (!isAbort(e)) chart.setError(e);
    }
  };
  keySel.addEventListener("change", () => { key = keySel.value; save(); void ctx.track(loadCurves()); });
  const controls = chartControls(settings, (s) => { settings = s; save(); chart?.setSettings(s); });

  // --- parallel coordinates
  const pSel = h("select", { testid: "parcoords-metric" },
    metricKeys.map((k) => h("option", { value: k, selected: k === pkey }, k)));
  const canvas = h("canvas", { testid: "parcoords", class: "parcoords", height: "300" });
  const drawP = (): void => {
    const axes: { name: string; values: number[] }[] = [];
    for (const f of cmp.fields) {
      if (!f.section.startsWith("param") || !f.differs) continue;
      const vals = f.values.map((v) => (v === "" ? NaN : Number(v)));
      if (vals.every((v) => Number.isFinite(v))) axes.push({ name: f.key, values: vals });
    }
    const m = cmp.metrics.find((x) => x.key === pkey);
    if (m) axes.push({ name: `${m.key} (best)`, values: m.stats.map((s) => (s.present ? Number(s.best) : NaN)) });
    canvas.width = Math.max(300, canvas.parentElement?.clientWidth ?? 800);
    drawParcoords(canvas, axes, runIds.map((_, i) => color(i)), runIds.map((_, i) => name(i)));
    hooks.parcoords = { axes: axes.map((a) => a.name), lines: runIds.length, metric: pkey };
  };
  pSel.addEventListener("change", () => { pkey = pSel.value; save(); drawP(); });

  clear(root,
    h("h1", null, `Compare ${cmp.runs.length} runs`),
    section(`What differs (${ndiff} of ${fields.length} fields)`,
      h("label", { class: "toolbar" }, equalBox, " show equal rows"),
      h("div", { class: "scrollx" }, h("table", { class: "grid", testid: "diff-table" },
        h("thead", null, h("tr", null, h("th", null, "section"), h("th", null, "field"), runHead)),
        diffBody))),
    section("Metrics", h("div", { class: "scrollx" }, summary)),
    section("Curves", h("div", { class: "toolbar" }, h("label", null, "metric ", keySel)), controls, chartBox),
    section("Parallel coordinates", h("div", { class: "toolbar" },
      h("label", null, "metric ", pSel),
      h("span", { class: "muted" }, "axes: the differing numeric params, then the metric's best value")),
      h("div", null, canvas)),
  );
  drawP();
  await ctx.track(loadCurves());
}

/** A long value (over 160 characters or several lines) shows 3 lines; a click toggles all. */
export function clampCell(v: string): Node | string {
  if (v.length <= 160 && !v.includes("\n")) return v;
  const el = h("div", { class: "clamp", testid: "clamp", "data-open": "0" }, v);
  el.addEventListener("click", () => {
    const open = el.classList.toggle("open");
    el.dataset.open = open ? "1" : "0";
  });
  return el;
}

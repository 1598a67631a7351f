// Distributed: the cross-rank envelope of a key (mean, min/max band, the outlier rank's
// own curve), a rank x step lag heatmap, departures and first non-finite values, and
// the ranks health table.
import { Ctx, enc, errorBox, isAbort } from "../api";
import { Chart, chartControls, fromHistory, maxPointsFor, type SeriesData } from "../chart";
import { clear, fmtNum, h, table } from "../dom";
import { hooks } from "../hooks";
import { href, replaceQuery } from "../route";
import type { MetricHistory, MetricSummary, RankEnvelope, RankHealthReport, RankLag } from "../types";
import { ranksTable, section, settingsFrom, settingsQuery } from "./common";

export async function mountDistributed(ctx: Ctx, root: HTMLElement, id: string,
                                       p: URLSearchParams): Promise<void> {
  let key = p.get("key") ?? "";
  let settings = settingsFrom(p);
  const save = (): void => replaceQuery({ key, ...settingsQuery(settings) });
  root.append(h("div", { class: "loading", testid: "loading" }, "loading…"));
  // The keys and the ranks report go out together; the envelope and the lag follow the
  // keys' answer (fast) without waiting for the report (slow), unless the default key
  // needs the report's lag key.
  const reportP = ctx.get<RankHealthReport>(`/api/runs/${enc(id)}/ranks`);
  reportP.catch(() => undefined);
  let keys: MetricSummary[];
  try {
    keys = (await ctx.get<{ metrics: MetricSummary[] }>(`/api/runs/${enc(id)}/metrics`)).metrics;
  } catch (e) {
    if (!isAbort(e)) clear(root, errorBox(e));
    return;
  }
  const names = keys.map((k) => k.key);
  if (!names.includes(key)) {
    key = names.includes("loss") ? "loss" : names.find((k) => /loss/.test(k)) ?? "";
    if (!key) {
      let lagKey = "";
      try { lagKey = (await reportP).lag_key; } catch { /* shown in the health section */ }
      key = names.includes(lagKey) ? lagKey : names[0] ?? "";
    }
  }
  const healthBox = h("div", null, h("div", { class: "loading", testid: "loading" }, "loading ranks…"));
  const reportDone = reportP.then((r) => { clear(healthBox, ranksTable(r)); return r; },
    (e) => { if (!isAbort(e)) clear(healthBox, errorBox(e)); return null; });
  const keySel = h("select", { testid: "envelope-key" },
    names.map((k) => h("option", { value: k, selected: k === key }, k)));
  const callout = h("div");
  const chartBox = h("div");
  const lagBox = h("div");
  const tables = h("div");
  const controls = chartControls(settings, (s) => { settings = s; save(); chart?.setSettings(s); });
  let chart: Chart | null = null;

  clear(root,
    h("div", { class: "title" }, h("h1", null, "Ranks of ", h("a", { href: href(["run", id]) }, id)),
      h("label", null, " key ", keySel)),
    section("Cross-rank envelope", callout, controls, chartBox),
    section("Lag behind the median rank", lagBox),
    tables,
    section("Rank health", healthBox));

  const load = async (): Promise<void> => {
    chart?.destroy();
    clear(chartBox);
    clear(callout);
    clear(lagBox);
    clear(tables);
    if (!key) { chartBox.append(h("div", { class: "muted" }, "No metrics.")); return; }
    let outlier = -1;
    let firstEnv: RankEnvelope | null = null;
    // The first load draws the envelope as soon as it arrives, then adds the outlier's curve.
    let onEnvelope: ((s: SeriesData[]) => void) | null = null;
    const fetchAll = async (start: number | null, end: number | null, mp: number): Promise<SeriesData[]> => {
      const env = await ctx.get<RankEnvelope>(`/api/runs/${enc(id)}/envelope`, {
        key, max_points: mp, start_step: start ?? undefined, end_step: end ?? undefined });
      const series: SeriesData[] = [{
        runId: id, key, label: `mean of ${env.ranks.length} ranks`, steps: env.steps,
        values: env.mean.map(Number), ts: env.steps.map(() => 0), min: env.min.map(Number),
        max: env.max.map(Number), downsampled: env.downsampled, band: true, color: "#2f6fdf",
      }];
      if (start === null && !firstEnv) {
        firstEnv = env;
        outlier = env.outlier_rank;
        onEnvelope?.(series);
      }
      if (outlier >= 0) {
        const r = await ctx.get<{ series: MetricHistory[] }>("/api/history", {
          run: id, key, rank: outlier, max_points: mp, start_step: start ?? undefined,
          end_step: end ?? undefined });
        for (const s of r.series) {
          series.push(...fromHistory(s, () => `rank ${outlier} (outlier)`, () => "#e03131")
            .map((x) => ({ ...x, rank: outlier })));
        }
      }
      return series;
    };
    chart = new Chart({ id: "envelope", title: `${key} across ranks`, ctx, settings, height: 300,
                        refetch: fetchAll, stepOnly: true });
    chartBox.append(chart.el);
    const mp = maxPointsFor(chart.width() || 800);
    const lag = ctx.get<RankLag>(`/api/runs/${enc(id)}/lag`, { key }).then(drawLag)
      .catch((e) => { if (!isAbort(e)) lagBox.append(errorBox(e)); });
    const c = chart;
    onEnvelope = (s) => { c.countFetch(mp); c.setSeries(s.slice()); };
    try {
      const series = await fetchAll(null, null, mp);
      onEnvelope = null;
      if (series.length > 1) chart.setSeries(series);
      const env = firstEnv as RankEnvelope | null;
      if (env) {
        const report = await reportDone;
        if (chart !== c) return;
        drawTables(env, report);
      }
      if (outlier >= 0) {
        callout.append(h("div", { class: "callout", testid: "envelope-outlier", "data-rank": outlier },
          `Rank ${outlier} departs from the other ranks on ${key}; its own curve is drawn in red.`));
      }
    } catch (e) {
      if (!isAbort(e)) chartBox.append(errorBox(e));
    }
    await lag;
  };

  const drawTables = (env: RankEnvelope, report: RankHealthReport | null): void => {
    const nf = new Map<string, { rank: number; key: string; step: number; value: unknown }>();
    for (const f of env.first_non_finite) nf.set(`${f.rank}/${key}`, { ...f, key });
    for (const r of report?.ranks ?? []) {
      for (const f of r.first_non_finite) {
        if (!nf.has(`${r.rank}/${f.key}`)) nf.set(`${r.rank}/${f.key}`, { rank: r.rank, ...f });
      }
    }
    const nfRows = [...nf.values()].sort((a, b) => a.rank - b.rank || a.step - b.step);
    tables.append(
      section(`Departures from the median (${key})`, env.departures.length
        ? table("departures-table", ["rank", "first departing step", "value", "median"],
          env.departures.map((d) => h("tr", { testid: "departure-row", "data-rank": d.rank },
            h("td", null, String(d.rank)), h("td", null, String(d.step)),
            h("td", { class: "num" }, fmtNum(d.value)), h("td", { class: "num" }, fmtNum(d.median)))))
        : h("div", { class: "muted", testid: "departures-table" }, "No rank departs from the median.")),
      section("First non-finite value per rank", nfRows.length
        ? table("nonfinite-table", ["rank", "key", "step", "value"],
          nfRows.map((f) => h("tr", { testid: "nonfinite-row", "data-rank": f.rank, "data-key": f.key },
            h("td", null, String(f.rank)), h("td", null, f.key), h("td", null, String(f.step)),
            h("td", null, fmtNum(f.value)))))
        : h("div", { class: "muted", testid: "nonfinite-table" }, "Every value is finite.")));
  };

  const drawLag = (lag: RankLag): void => {
    const cells = lag.lag_ms.map((row) => row.map(Number));
    let max = 0;
    for (const row of cells) for (const v of row) if (Number.isFinite(v)) max = Math.max(max, Math.abs(v));
    hooks.heatmap = { ranks: lag.ranks, steps: lag.steps.length, maxLagMs: max };
    if (!lag.ranks.length || !lag.steps.length) {
      lagBox.append(h("div", { class: "muted", testid: "lag-heatmap-empty" },
        `No lag to show for ${lag.key || key}.`));
      return;
    }
    const cssW = Math.max(300, lagBox.clientWidth || 900);
    const rowH = Math.max(8, Math.min(24, Math.floor(320 / lag.ranks.length)));
    const cssH = rowH * lag.ranks.length;
    const left = 48;
    const canvas = h("canvas", { testid: "lag-heatmap", class: "heatmap",
      "data-ranks": lag.ranks.length, "data-steps": lag.steps.length });
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round((cssH + 18) * dpr);
    canvas.style.width = `${cssW}px`;
    canvas.style.height = `${cssH + 18}px`;
    const g = canvas.getContext("2d")!;
    g.scale(dpr, dpr);
    const cw = (cssW - left) / lag.steps.length;
    const fg2 = getComputedStyle(document.body).getPropertyValue("--fg2").trim() || "#666";
    g.font = "11px system-ui, sans-serif";
    lag.ranks.forEach((rank, i) => {
      g.fillStyle = fg2;
      g.fillText(`rank ${rank}`, 2, i * rowH + rowH / 2 + 4);
      cells[i].forEach((v, j) => {
        g.fillStyle = lagColor(v, max);
        g.fillRect(left + j * cw, i * rowH, Math.ceil(cw), rowH - 1);
      });
    });
    g.fillStyle = fg2;
    g.fillText(`step ${lag.steps[0]}`, left, cssH + 13);
    const lastLbl = `step ${lag.steps[lag.steps.length - 1]}`;
    g.fillText(lastLbl, cssW - g.measureText(lastLbl).width - 2, cssH + 13);
    const tip = h("div", { class: "tooltip", testid: "lag-tooltip", hidden: true });
    canvas.addEventListener("mousemove", (ev) => {
      const r = canvas.getBoundingClientRect();
      const x = ev.clientX - r.left;
      const y = ev.clientY - r.top;
      const i = Math.floor(y / rowH);
      const j = Math.floor((x - left) / cw);
      if (i < 0 || i >= lag.ranks.length || j < 0 || j >= lag.steps.length) { tip.hidden = true; return; }
      const v = cells[i][j];
      tip.hidden = false;
      tip.textContent = `rank ${lag.ranks[i]}, step ${lag.steps[j]}, lag ${Number.isFinite(v) ? fmtNum(v) : "none"} ms`;
      tip.style.left = `${x + 12}px`;
      tip.style.top = `${y + 12}px`;
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    const legend = h("div", { class: "lag-legend", testid: "lag-legend" },
      h("span", null, `${fmtNum(-max)} ms (ahead)`),
      h("span", { class: "ramp", style: `background:linear-gradient(90deg,${lagColor(-max, max)},${lagColor(0, max)},${lagColor(max, max)})` }),
      h("span", null, `${fmtNum(max)} ms (behind)`),
      h("span", { class: "muted" }, "  grey: no points"));
    lagBox.append(h("p", { class: "muted" },
      `Each cell: the rank's mean lag behind the median rank over a bucket of steps of ${lag.key || key}.`),
      h("div", { class: "heatwrap" }, canvas, tip), legend);
  };

  keySel.addEventListener("change", () => { key = keySel.value; save(); void ctx.track(load()); });
  await Promise.all([ctx.track(load()), reportDone]);
}

/** Diverging colour: blue (ahead) .. neutral .. red (behind); grey for no value. */
export function lagColor(v: number, max: number): string {
  if (!Number.isFinite(v)) return "rgba(128,128,128,0.35)";
  const t = max > 0 ? Math.max(-1, Math.min(1, v / max)) : 0;
  const a = Math.abs(t);
  const [r, g, b] = t >= 0 ? [224, 49, 49] : [47, 111, 223];
  const mix = (c: number): number => Math.round(245 + (c - 245) * a);
  return `rgb(${mix(r)},${mix(g)},${mix(b)})`;
}

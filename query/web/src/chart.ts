// The one chart component every view uses: uPlot with overlaid series (runs x keys x
// ranks), step / wall / relative time on x, log y, EMA smoothing over a faint raw curve,
// a min/max band for downsampled series, and drag-zoom that re-fetches the visible step
// range at the plot's resolution (double click resets).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { Ctx, isAbort, errorBox } from "./api";
import { clear, color, fmtNum, h } from "./dom";
import { fmtTicks, INT_INCRS } from "./format";
import { hooks } from "./hooks";
import type { MetricHistory } from "./types";

export type XMode = "step" | "wall" | "rel";
export interface ChartSettings { xMode: XMode; logY: boolean; smoothing: number }

/** One drawn series: columnar points; min/max are the bucket extremes when downsampled. */
export interface SeriesData {
  runId: string;
  key: string;
  rank?: number;
  label: string;
  steps: number[];
  values: number[];
  ts: number[];
  min?: number[];
  max?: number[];
  downsampled: boolean;
  /** Draw min/max as a band even when not downsampled (the cross-rank envelope). */
  band?: boolean;
  color?: string;
  dash?: boolean;
  width?: number;
}

/** Refetch the step range [start, end] (null = all) at maxPoints a series. */
export type Refetch = (start: number | null, end: number | null, maxPoints: number)
  => Promise<SeriesData[]>;

/** Never more than 10,000 points a series, and no more than twice the width in px. */
export const maxPointsFor = (widthPx: number, factor = 2): number =>
  Math.max(2, Math.min(10000, Math.round(Math.max(widthPx, 50) * factor)));

const nums = (xs: unknown[] | undefined): number[] => (xs ?? []).map((x) => Number(x));

/** A MetricHistory as series, one per rank when it holds several ranks. */
export function fromHistory(m: MetricHistory, label: (rank?: number) => string,
                            colorOf?: (rank?: number) => string | undefined): SeriesData[] {
  const values = nums(m.values);
  const mins = nums(m.min_values);
  const maxs = nums(m.max_values);
  const counts = m.bucket_counts ?? [];
  const ds = !!m.downsampled && counts.some((c) => c > 1);
  const ranks = m.ranks ?? [];
  const distinct = [...new Set(ranks)];
  const make = (idx: number[], rank?: number): SeriesData => ({
    runId: m.run_id, key: m.key, rank, label: label(rank),
    steps: idx.map((i) => m.steps[i]), values: idx.map((i) => values[i]),
    ts: idx.map((i) => m.ts_ms[i]),
    min: mins.length ? idx.map((i) => mins[i]) : undefined,
    max: maxs.length ? idx.map((i) => maxs[i]) : undefined,
    downsampled: ds, color: colorOf?.(rank),
  });
  if (distinct.length <= 1) {
    return [make(m.steps.map((_, i) => i), distinct.length ? distinct[0] : undefined)];
  }
  const by = new Map<number, number[]>();
  ranks.forEach((r, i) => { if (!by.has(r)) by.set(r, []); by.get(r)!.push(i); });
  return [...by.entries()].sort((a, b) => a[0] - b[0]).map(([r, idx]) => make(idx, r));
}

/** TensorBoard's debiased EMA; non-finite points stay gaps and do not move the average. */
export function ema(values: (number | null)[], s: number): (number | null)[] {
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (v === null || !Number.isFinite(v)) return null;
    last = last * s + (1 - s) * v;
    n++;
    return last / (1 - Math.pow(s, n));
  });
}

/** The x axis / log / smoothing controls, shared by a group of charts. */
export function chartControls(s: ChartSettings, onChange: (s: ChartSettings) => void): HTMLElement {
  const label = h("span", { class: "muted", testid: "chart-smoothing-value" }, s.smoothing.toFixed(2));
  const xmode = h("select", { testid: "chart-xmode" },
    h("option", { value: "step", selected: s.xMode === "step" }, "step"),
    h("option", { value: "wall", selected: s.xMode === "wall" }, "wall time"),
    h("option", { value: "rel", selected: s.xMode === "rel" }, "relative time"));
  const logy = h("input", { type: "checkbox", testid: "chart-logy", checked: s.logY });
  const smooth = h("input", { type: "range", min: "0", max: "0.99", step: "0.01",
                              value: String(s.smoothing), testid: "chart-smoothing" });
  const fire = (): void => {
    label.textContent = Number(smooth.value).toFixed(2);
    onChange({ xMode: xmode.value as XMode, logY: logy.checked, smoothing: Number(smooth.value) });
  };
  xmode.addEventListener("change", fire);
  logy.addEventListener("change", fire);
  smooth.addEventListener("input", fire);
  return h("div", { class: "toolbar", testid: "chart-controls" },
    h("label", null, "x ", xmode), h("label", null, logy, " log y"),
    h("label", null, "smoothing ", smooth, " ", label),
    h("span", { class: "muted" }, "drag to zoom, double click to reset"));
}

export interface ChartOptions {
  id: string;
  title: string;
  ctx: Ctx;
  settings: ChartSettings;
  height?: number;
  /** Height = width x aspect, clamped to [height (or 180), maxHeight (or 360)]. */
  aspect?: number;
  maxHeight?: number;
  refetch?: Refetch;
  /** The x axis is always the step (series without timestamps). */
  stepOnly?: boolean;
}

type Table = (number | null | undefined)[][];

const AXIS_FONT = "12px system-ui, -apple-system, \"Segoe UI\", Roboto, sans-serif";
let measureCtx: CanvasRenderingContext2D | null = null;
/** Width in CSS px of a tick label drawn in AXIS_FONT. */
function textWidth(s: string): number {
  if (!measureCtx) measureCtx = document.createElement("canvas").getContext("2d");
  if (!measureCtx) return s.length * 7;
  measureCtx.font = AXIS_FONT;
  return measureCtx.measureText(s).width;
}
/** The y axis' width from its widest label: label + tick (10) + gap (5) + margin. */
const ySize = (_u: uPlot, values: string[] | null): number =>
  !values || !values.length ? 40
    : Math.max(32, Math.ceil(Math.max(...values.map((v) => textWidth(v ?? "")))) + 21);

export class Chart {
  readonly el: HTMLElement;
  private box: HTMLElement;
  private legend: HTMLElement;
  private readout: HTMLElement;
  private status: HTMLElement;
  private u: uPlot | null = null;
  private full: SeriesData[] = [];
  private zoomData: SeriesData[] | null = null;
  private zoom: [number, number] | null = null;
  private fetches = 0;
  private maxPoints = 0;
  private settings: ChartSettings;
  private ro: ResizeObserver;
  private raf = 0;
  private t0 = new Map<string, number>();

  constructor(private readonly o: ChartOptions) {
    this.settings = { ...o.settings };
    this.box = h("div", { class: "plot" });
    this.legend = h("div", { class: "legend" });
    this.readout = h("div", { class: "readout muted" });
    this.status = h("div", { class: "chart-status" });
    this.el = h("div", { class: "chart", testid: "chart", "data-chart-id": o.id },
      h("div", { class: "chart-title" }, o.title, this.status), this.box, this.legend, this.readout);
    this.ro = new ResizeObserver(() => this.resize());
    this.ro.observe(this.box);
    o.ctx.onDispose(() => this.destroy());
    this.publish();
  }

  /** Width of the plot in px (0 while hidden). */
  width(): number { return Math.floor(this.box.clientWidth); }

  /** Count a request made for this chart's data (the view's initial fetch, say). */
  countFetch(maxPoints: number): void { this.fetches++; this.maxPoints = maxPoints; this.publish(); }

  setSeries(series: SeriesData[]): void {
    this.full = series;
    this.zoomData = null;
    this.zoom = null;
    clear(this.status);
    this.render();
  }

  setSettings(s: ChartSettings): void { this.settings = { ...s }; this.render(); }

  setError(e: unknown): void { clear(this.status, errorBox(e)); }

  /** Live points: append to the matching series (a new rank of a known key starts one). */
  append(runId: string, key: string, rank: number, step: number, value: number, ts: number): boolean {
    let s = this.full.find((x) => x.runId === runId && x.key === key &&
                                  (x.rank === undefined || x.rank === rank));
    if (!s) {
      const proto = this.full.find((x) => x.runId === runId && x.key === key);
      if (!proto) return false;
      s = { ...proto, rank, label: `${proto.label.replace(/ · rank \d+$/, "")} · rank ${rank}`,
            steps: [], values: [], ts: [], min: undefined, max: undefined, color: undefined };
      this.full.push(s);
    }
    const last = s.steps.length ? s.steps[s.steps.length - 1] : -Infinity;
    if (step <= last) return true;
    s.steps.push(step);
    s.values.push(value);
    s.ts.push(ts);
    if (s.min) s.min.push(value);
    if (s.max) s.max.push(value);
    if (!this.zoom && !this.raf) {
      this.raf = requestAnimationFrame(() => { this.raf = 0; this.render(); });
    }
    return true;
  }

  /** The highest step any series holds (-1 if none). */
  lastStep(): number {
    let m = -1;
    for (const s of this.full) if (s.steps.length) m = Math.max(m, s.steps[s.steps.length - 1]);
    return m;
  }

  destroy(): void {
    this.ro.disconnect();
    if (this.raf) cancelAnimationFrame(this.raf);
    this.u?.destroy();
    this.u = null;
  }

  private xm(): XMode { return this.o.stepOnly ? "step" : this.settings.xMode; }

  private shown(): SeriesData[] { return this.zoomData ?? this.full; }

  private publish(): void {
    const data = this.shown();
    hooks.charts[this.o.id] = {
      series: data.map((s) => ({
        runId: s.runId, key: s.key, ...(s.rank !== undefined ? { rank: s.rank } : {}),
        points: s.steps.length, downsampled: s.downsampled, envelope: this.hasBand(s),
        firstStep: s.steps.length ? s.steps[0] : null,
        lastStep: s.steps.length ? s.steps[s.steps.length - 1] : null,
      })),
      xMode: this.xm(), logY: this.settings.logY, smoothing: this.settings.smoothing,
      fetches: this.fetches, zoom: this.zoom, maxPoints: this.maxPoints,
    };
  }

  private hasBand(s: SeriesData): boolean {
    return (s.downsampled || !!s.band) && !!s.min && !!s.max && s.min.length === s.steps.length;
  }

  private resize(): void {
    const w = this.width();
    if (w <= 0) return;
    if (!this.u) { this.render(); return; }
    const hgt = this.height();
    if (Math.abs(this.u.width - w) > 1 || this.u.height !== hgt) this.u.setSize({ width: w, height: hgt });
  }

  private height(): number {
    const base = this.o.height ?? 200;
    if (!this.o.aspect) return base;
    return Math.round(Math.max(base, Math.min(this.o.maxHeight ?? 360, this.width() * this.o.aspect)));
  }

  private render(): void {
    const data = this.shown();
    this.publish();
    this.u?.destroy();
    this.u = null;
    clear(this.legend);
    const w = this.width();
    if (!data.length) {
      clear(this.box, h("div", { class: "empty muted" }, "no points"));
      return;
    }
    if (w <= 0) return;
    clear(this.box);
    const { logY, smoothing } = this.settings;
    const xMode = this.xm();
    const t0 = new Map<string, number>();
    this.t0 = t0;
    for (const s of data) {
      if (s.ts.length) t0.set(s.runId, Math.min(t0.get(s.runId) ?? Infinity, s.ts[0]));
    }
    const tables: Table[] = [];
    const series: uPlot.Series[] = [{}];
    const bands: uPlot.Band[] = [];
    let col = 1;
    data.forEach((s, i) => {
      const c = s.color ?? color(i);
      const base = t0.get(s.runId) ?? 0;
      const x = xMode === "step" ? s.steps.slice()
        : xMode === "wall" ? s.ts.map((t) => t / 1000) : s.ts.map((t) => (t - base) / 1000);
      const fix = (v: number): number | null =>
        !Number.isFinite(v) || (logY && v <= 0) ? null : v;
      let order = x.map((_, j) => j);
      if (x.some((v, j) => j > 0 && v < x[j - 1])) order = order.sort((a, b) => x[a] - x[b]);
      const xo = order.map((j) => x[j]);
      const raw = order.map((j) => fix(s.values[j]));
      const cols: (number | null)[][] = [xo, raw];
      const smoothed = smoothing > 0;
      series.push({
        label: s.label, stroke: smoothed ? c + "55" : c, width: smoothed ? 1 : (s.width ?? 1.5),
        dash: s.dash ? [4, 3] : undefined, points: { show: false },
      });
      col++;
      if (smoothed) {
        cols.push(ema(raw, smoothing));
        series.push({ label: `${s.label} (smoothed)`, stroke: c, width: s.width ?? 1.5,
                      dash: s.dash ? [4, 3] : undefined, points: { show: false } });
        col++;
      }
      if (this.hasBand(s)) {
        cols.push(order.map((j) => fix(s.max![j])), order.map((j) => fix(s.min![j])));
        series.push({ label: `${s.label} max`, stroke: "transparent", width: 0, points: { show: false } },
                    { label: `${s.label} min`, stroke: "transparent", width: 0, points: { show: false } });
        bands.push({ series: [col, col + 1], fill: c + "33" });
        col += 2;
      }
      tables.push(cols);
      this.legend.appendChild(h("span", { class: "key" },
        h("i", { style: `background:${c}` }), s.label,
        this.hasBand(s) ? h("span", { class: "muted" }, " (min/max band)") : null));
    });
    const joined = uPlot.join(tables as uPlot.AlignedData[]);
    const css = getComputedStyle(document.body);
    const fg2 = css.getPropertyValue("--fg2").trim() || "#5f6b7a";
    const grid = css.getPropertyValue("--grid").trim() || "rgba(0,0,0,0.07)";
    const opts: uPlot.Options = {
      width: w, height: this.height(), series, bands,
      legend: { show: false },
      scales: { x: { time: xMode === "wall" }, y: logY ? { distr: 3, log: 10 } : {} },
      axes: [
        { label: xMode === "step" ? "step" : xMode === "rel" ? "seconds" : undefined,
          labelSize: xMode === "wall" ? 0 : 14, size: xMode === "wall" ? 48 : 36, stroke: fg2,
          font: AXIS_FONT, grid: { stroke: grid }, ticks: { stroke: grid },
          ...(xMode === "wall" ? {} : {
            values: (_u: uPlot, vals: number[], _i: number, _sp: number, incr: number) =>
              fmtTicks(vals, incr),
            ...(xMode === "step" ? { incrs: INT_INCRS } : {}),
          }) },
        { size: ySize, stroke: fg2, font: AXIS_FONT, grid: { stroke: grid }, ticks: { stroke: grid },
          values: (_u: uPlot, vals: number[], _i: number, _sp: number, incr: number) =>
            fmtTicks(vals, logY ? undefined : incr) },
      ],
      cursor: { drag: { x: true, y: false, setScale: false }, points: { show: false } },
      hooks: {
        setSelect: [(u) => this.onSelect(u)],
        setCursor: [(u) => this.onCursor(u)],
      },
    };
    this.u = new uPlot(opts, joined, this.box);
    performance.mark(`rs:draw:${this.o.id}`);
    this.u.over.addEventListener("dblclick", () => this.resetZoom());
  }

  private onCursor(u: uPlot): void {
    const i = u.cursor.idx;
    if (i === null || i === undefined) { this.readout.textContent = ""; return; }
    const x = u.data[0][i];
    const parts: string[] = [];
    for (let k = 1; k < u.series.length && parts.length < 8; k++) {
      const lbl = u.series[k].label;
      const v = u.data[k][i];
      if (typeof lbl === "string" && !lbl.endsWith(" min") && !lbl.endsWith(" max") &&
          v !== null && v !== undefined) parts.push(`${lbl}=${fmtNum(v)}`);
    }
    const xs = this.xm() === "wall" ? new Date(x * 1000).toLocaleString() : fmtNum(x);
    this.readout.textContent = `${this.xm()} ${xs}: ${parts.join("  ")}`;
  }

  private onSelect(u: uPlot): void {
    const { left, width } = u.select;
    if (width < 4) return;
    const x0 = u.posToVal(left, "x");
    const x1 = u.posToVal(left + width, "x");
    u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    let lo = Infinity;
    let hi = -Infinity;
    if (this.xm() === "step") {
      lo = Math.ceil(x0);
      hi = Math.floor(x1);
    } else {
      for (const s of this.shown()) {
        const base = this.xm() === "wall" ? 0 : this.t0.get(s.runId) ?? 0;
        s.ts.forEach((t, j) => {
          const x = (t - base) / 1000;
          if (x >= x0 && x <= x1) { lo = Math.min(lo, s.steps[j]); hi = Math.max(hi, s.steps[j]); }
        });
      }
    }
    if (!(lo <= hi)) return;
    void this.zoomTo(lo, hi);
  }

  /** Show steps [lo, hi] only, re-fetched at the plot's resolution when possible. */
  async zoomTo(lo: number, hi: number): Promise<void> {
    this.zoom = [lo, hi];
    const mp = maxPointsFor(this.width(), 1);
    if (this.o.refetch) {
      this.fetches++;
      this.maxPoints = mp;
      this.publish();
      try {
        const got = await this.o.ctx.track(this.o.refetch(lo, hi, mp));
        if (!this.zoom || this.zoom[0] !== lo || this.zoom[1] !== hi) return;
        this.zoomData = got.map((s, i) => ({ ...s, color: s.color ?? this.full[i]?.color }));
      } catch (e) {
        if (isAbort(e)) return;
        this.setError(e);
        return;
      }
    } else {
      this.zoomData = this.full.map((s) => {
        const idx = s.steps.map((_, j) => j).filter((j) => s.steps[j] >= lo && s.steps[j] <= hi);
        const pick = <T>(a: T[] | undefined): T[] | undefined => a && idx.map((j) => a[j]);
        return { ...s, steps: pick(s.steps)!, values: pick(s.values)!, ts: pick(s.ts)!,
                 min: pick(s.min), max: pick(s.max) };
      });
    }
    this.render();
  }

  resetZoom(): void {
    if (!this.zoom) return;
    this.zoom = null;
    this.zoomData = null;
    this.render();
  }
}

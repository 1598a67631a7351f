// window.__runstream: what each view and chart was given, for the browser tests
// (query/web/TESTING.md documents every field).

export interface SeriesHook {
  runId: string;
  key: string;
  rank?: number;
  points: number;
  downsampled: boolean;
  envelope: boolean;
  firstStep: number | null;
  lastStep: number | null;
}

export interface ChartHook {
  series: SeriesHook[];
  xMode: string;
  logY: boolean;
  smoothing: number;
  fetches: number;
  zoom: [number, number] | null;
  maxPoints: number;
}

export interface Hooks {
  view: string;
  ready: boolean;
  charts: Record<string, ChartHook>;
  parcoords?: { axes: string[]; lines: number; metric: string };
  heatmap?: { ranks: number[]; steps: number; maxLagMs: number };
  follow: { runId: string; open: boolean; events: number } | null;
}

declare global {
  interface Window { __runstream: Hooks }
}

export const hooks: Hooks = { view: "", ready: false, charts: {}, follow: null };
window.__runstream = hooks;

export function resetHooks(view: string): void {
  hooks.view = view;
  hooks.ready = false;
  hooks.charts = {};
  delete hooks.parcoords;
  delete hooks.heatmap;
  hooks.follow = null;
  document.body.dataset.view = view;
}

// Runs: a virtualised table over any number of runs, fetched page by page as it scrolls;
// filter (MLflow grammar), sort by header, column chooser, experiment and archived
// selectors, selection and Compare. Every choice lives in the hash.
import { ApiError, Ctx, errorBox, isAbort } from "../api";
import { clear, fmtDuration, fmtNum, fmtTime, h, statusBadge } from "../dom";
import { hooks } from "../hooks";
import { href, replaceQuery } from "../route";
import type { RunInfo } from "../types";

const ROW_H = 28;
const PAGE = 100;

interface Col {
  id: string;
  title: string;
  sortKey?: string;
  cell: (r: RunInfo) => Node | string;
  /** The cell's full text: its tooltip, and what its width is measured from. */
  text: (r: RunInfo) => string;
  /** Right-aligned numbers. */
  num?: boolean;
  /** Fixed width in px; else measured from the header and the rows, in [min, max]. */
  fixed?: number;
  min?: number;
  max?: number;
  /** Font of the measured text, when not the body's. */
  font?: string;
  /** Extra px around the text (a badge's padding, say). */
  extra?: number;
}

const BODY_FONT = '13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const HEAD_FONT = `600 ${BODY_FONT}`;
const MONO_FONT = "12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace";
const BADGE_FONT = `600 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
const CELL_PAD = 18; // .cell padding 8 + 8, plus 2 to spare
let measurer: CanvasRenderingContext2D | null = null;
/** Width in px of `text` drawn in `font` (a canvas measure: no layout). */
function textPx(text: string, font: string): number {
  if (!measurer) measurer = document.createElement("canvas").getContext("2d");
  if (!measurer) return text.length * 7.5;
  if (measurer.font !== font) measurer.font = font;
  return measurer.measureText(text).width;
}
const isNumeric = (v: unknown): boolean =>
  typeof v === "number" || (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v)));

const IDENT = /^[A-Za-z_][A-Za-z0-9_\-:/]*(\.[A-Za-z_][A-Za-z0-9_\-:/]*)*$/;

/** `params.lr` -> "params.lr"; a name the grammar cannot read bare is backquoted. */
export function orderField(column: string): string {
  const dot = column.indexOf(".");
  const kind = column.slice(0, dot);
  const name = column.slice(dot + 1);
  return IDENT.test(name) ? `${kind}.${name}` : `${kind}.\`${name.replace(/`/g, "``")}\``;
}

interface State {
  experiment: string[];
  filter: string;
  orderBy: string;
  columns: string[];
  view: string;
  selected: Set<string>;
}

export async function mountRuns(ctx: Ctx, root: HTMLElement, p: URLSearchParams): Promise<void> {
  const st: State = {
    experiment: p.getAll("experiment"), filter: p.get("filter") ?? "",
    orderBy: p.get("order_by") ?? "", columns: p.getAll("column"),
    view: p.get("view") ?? "ACTIVE_ONLY", selected: new Set(p.getAll("selected")),
  };
  const save = (): void => replaceQuery({
    experiment: st.experiment, filter: st.filter, order_by: st.orderBy, column: st.columns,
    view: st.view === "ACTIVE_ONLY" ? "" : st.view, selected: [...st.selected],
  });

  let runs: RunInfo[] = [];
  let token = "";
  let more = true;
  let loading = false;
  let gen = 0;

  // --- toolbar
  const expSel = h("select", { testid: "experiment-select" },
    h("option", { value: "" }, "all experiments"));
  const archSel = h("select", { testid: "archived-toggle" },
    ...[["ACTIVE_ONLY", "active"], ["ARCHIVED_ONLY", "archived"], ["ALL", "active + archived"]]
      .map(([v, t]) => h("option", { value: v, selected: st.view === v }, t)));
  const filterIn = h("input", { type: "text", class: "filter", testid: "filter-input",
    placeholder: "filter, e.g. metrics.loss < 0.5 AND params.lr = '0.01'", value: st.filter,
    spellcheck: "false" });
  const filterErr = h("div", { class: "filter-error" });
  const compareBtn = h("button", { testid: "compare-button", disabled: true }, "Compare");
  const selCount = h("span", { class: "muted", testid: "selected-count" }, "");
  const colBtn = h("button", { testid: "column-chooser" }, "Columns");
  const colPanel = h("div", { class: "popover", testid: "column-panel", hidden: true });
  const count = h("span", { class: "muted", testid: "runs-count" });

  const scroller = h("div", { class: "vtable", testid: "runs-table", "data-loaded": "0",
                              "data-more": "1" });
  const headRow = h("div", { class: "vrow vhead" });
  const body = h("div", { class: "vbody" });
  const status = h("div", { class: "vstatus" });
  scroller.append(headRow, body, status);

  root.append(
    h("div", { class: "toolbar" },
      expSel, archSel, filterIn, h("button", { onclick: () => applyFilter() }, "Apply"),
      h("span", { class: "popwrap" }, colBtn, colPanel), compareBtn, selCount, count),
    filterErr, scroller);

  // --- columns
  let cols: Col[] = [];
  // Column widths in px, measured from the header and the rows fetched so far; they only
  // grow (a next page or a new filter never makes the columns jump narrower).
  const widths = new Map<string, number>();
  const numericCols = new Map<string, boolean>();
  const measure = (rows: RunInfo[]): boolean => {
    let changed = false;
    for (const c of cols) {
      if (c.fixed) continue;
      const arrow = c.sortKey ? 16 : 0;
      let w = textPx(c.title, HEAD_FONT) + arrow;
      if (c.id === "name") {
        for (const r of rows) {
          w = Math.max(w, r.name ? textPx(r.name, BODY_FONT) + textPx(` ${r.run_id}`, MONO_FONT)
                                 : textPx(r.run_id, BODY_FONT));
        }
      } else {
        for (const r of rows) w = Math.max(w, textPx(c.text(r), c.font ?? BODY_FONT) + (c.extra ?? 0));
      }
      const px = Math.round(Math.max(c.min ?? 48, Math.min(c.max ?? 280, Math.ceil(w) + CELL_PAD)));
      if (px > (widths.get(c.id) ?? 0)) { widths.set(c.id, px); changed = true; }
      if (c.id.startsWith("params.") || c.id.startsWith("tags.")) {
        const vals = rows.map((r) => r.columns?.[c.id]).filter((v) => v !== undefined && v !== "");
        if (vals.length) {
          const num = (numericCols.get(c.id) ?? true) && vals.every(isNumeric);
          if (num !== numericCols.get(c.id)) { numericCols.set(c.id, num); changed = true; }
        }
      }
    }
    if (changed) applyWidths();
    return changed;
  };
  const applyWidths = (): void => {
    scroller.style.setProperty("--cols", cols.map((c) => `${c.fixed ?? widths.get(c.id) ?? 120}px`).join(" "));
    cols.forEach((c) => { if (numericCols.get(c.id)) c.num = true; });
    drawHead();
  };
  const colText = (c: string) => (r: RunInfo): string => {
    const v = r.columns?.[c];
    return v === undefined ? "" : c.startsWith("metrics.") ? fmtNum(v) : String(v);
  };
  const buildCols = (): void => {
    cols = [
      { id: "sel", title: "", fixed: 32, text: () => "", cell: (r) => h("input", {
        type: "checkbox", testid: "run-select", checked: st.selected.has(r.run_id),
        onchange: (e: Event) => toggle(r.run_id, (e.target as HTMLInputElement).checked) }) },
      { id: "name", title: "Run", sortKey: "attributes.run_name", min: 160, max: 520,
        text: (r) => (r.name ? `${r.name} ${r.run_id}` : r.run_id),
        cell: (r) => h("a", { href: href(["run", r.run_id]), title: r.run_id },
          r.name || r.run_id, r.name ? h("span", { class: "muted id" }, ` ${r.run_id}`) : null) },
      { id: "status", title: "Status", sortKey: "attributes.status", font: BADGE_FONT, extra: 16,
        text: (r) => r.status, cell: (r) => statusBadge(r.status) },
      { id: "exp", title: "Experiment", sortKey: "attributes.experiment", max: 240,
        text: (r) => r.experiment, cell: (r) => r.experiment },
      { id: "start", title: "Started", sortKey: "attributes.start_time",
        text: (r) => fmtTime(r.start_ms), cell: (r) => fmtTime(r.start_ms) },
      { id: "dur", title: "Duration", sortKey: "attributes.end_time", num: true,
        text: (r) => (r.end_ms ? fmtDuration(r.end_ms - r.start_ms) : "running"),
        cell: (r) => (r.end_ms ? fmtDuration(r.end_ms - r.start_ms) : "running") },
      { id: "ws", title: "Ranks", sortKey: "attributes.world_size", num: true,
        text: (r) => String(r.world_size), cell: (r) => String(r.world_size) },
      ...st.columns.map((c): Col => ({
        id: c, title: c, sortKey: orderField(c), max: 280, num: c.startsWith("metrics."),
        text: colText(c), cell: colText(c),
      })),
    ];
    measure(runs);
    applyWidths();
  };
  const drawHead = (): void => {
    const [sortKey, sortDir] = st.orderBy ? splitOrder(st.orderBy) : ["", ""];
    clear(headRow, cols.map((c) => c.sortKey
      ? h("div", { class: `cell sortable${c.num ? " num" : ""}`, testid: "sort-header",
                   "data-sort-key": c.sortKey,
                   "data-sort-dir": c.sortKey === sortKey ? sortDir : undefined,
                   title: `${c.title}: sort by ${c.sortKey}`, onclick: () => sortBy(c.sortKey!) },
          c.title, c.sortKey === sortKey ? (sortDir === "ASC" ? " ▲" : " ▼") : "")
      : h("div", { class: "cell" }, c.title)));
  };

  const splitOrder = (o: string): [string, string] => {
    const m = /^(.*?)\s+(ASC|DESC)$/i.exec(o.trim());
    return m ? [m[1], m[2].toUpperCase()] : [o.trim(), "ASC"];
  };

  const sortBy = (key: string): void => {
    const [k, d] = st.orderBy ? splitOrder(st.orderBy) : ["", ""];
    st.orderBy = `${key} ${k === key && d === "DESC" ? "ASC" : "DESC"}`;
    save();
    buildCols();
    reload();
  };

  const toggle = (id: string, on: boolean): void => {
    if (on) st.selected.add(id); else st.selected.delete(id);
    save();
    updateSel();
  };
  const updateSel = (): void => {
    const n = st.selected.size;
    selCount.textContent = n ? `${n} selected` : "";
    compareBtn.disabled = n < 2 || n > 50;
  };
  compareBtn.addEventListener("click", () => {
    location.hash = href(["compare"], { run: [...st.selected] });
  });

  // --- virtual rows
  const paint = (fetchMore = true): void => {
    body.style.height = `${runs.length * ROW_H}px`;
    const top = Math.max(0, scroller.scrollTop - ROW_H);
    const first = Math.max(0, Math.floor(top / ROW_H) - 5);
    const visible = Math.ceil((scroller.clientHeight || 600) / ROW_H) + 10;
    const last = Math.min(runs.length, first + visible);
    const rows: HTMLElement[] = [];
    for (let i = first; i < last; i++) {
      const r = runs[i];
      rows.push(h("div", { class: `vrow${st.selected.has(r.run_id) ? " sel" : ""}`,
                           testid: "runs-row", "data-run-id": r.run_id, "data-index": i,
                           style: `transform:translateY(${i * ROW_H}px)` },
        cols.map((c) => {
          const t = c.text(r);
          return h("div", { class: c.num ? "cell num" : "cell", title: t || undefined }, c.cell(r));
        })));
    }
    clear(body, rows);
    scroller.dataset.loaded = String(runs.length);
    scroller.dataset.more = more ? "1" : "0";
    count.textContent = `${runs.length}${more ? "+" : ""} runs`;
    if (fetchMore && more && !loading && last >= runs.length - 20) void loadPage();
  };
  let rafId = 0;
  scroller.addEventListener("scroll", () => {
    if (!rafId) rafId = requestAnimationFrame(() => { rafId = 0; paint(); });
  });
  ctx.onDispose(() => cancelAnimationFrame(rafId));

  const showFilterError = (e: ApiError): void => {
    const pos = e.position ?? -1;
    const text = st.filter;
    const echo = pos >= 0 && pos <= text.length
      ? h("code", { class: "echo", testid: "filter-echo" }, text.slice(0, pos),
          h("mark", { testid: "filter-error-mark" }, text.slice(pos, pos + 1) || " "),
          text.slice(pos + 1))
      : null;
    clear(filterErr, h("div", { class: "error", testid: "filter-error",
                                "data-position": pos >= 0 ? pos : undefined },
      e.message), echo);
    filterIn.classList.add("bad");
    if (pos >= 0 && pos <= filterIn.value.length && document.activeElement === filterIn) {
      filterIn.setSelectionRange(pos, Math.min(pos + 1, filterIn.value.length));
    }
  };

  async function loadPage(): Promise<void> {
    const my = gen;
    loading = true;
    clear(status, h("div", { class: "loading", testid: "loading" }, "loading runs…"));
    try {
      const page = await ctx.get<{ runs: RunInfo[]; next_page_token: string }>("/api/runs", {
        experiment: st.experiment, filter: st.filter, order_by: st.orderBy ? [st.orderBy] : [],
        page_size: PAGE, page_token: token, view: st.view, column: st.columns,
      });
      if (my !== gen) return;
      runs = runs.concat(page.runs);
      measure(page.runs);
      token = page.next_page_token ?? "";
      more = !!token;
      clear(status, !runs.length ? h("div", { class: "muted empty", testid: "runs-empty" },
        "No runs match.") : null);
      clear(filterErr);
      filterIn.classList.remove("bad");
    } catch (e) {
      if (isAbort(e) || my !== gen) return;
      more = false;
      if (e instanceof ApiError && e.status === 400) {
        showFilterError(e);
        clear(status);
      } else {
        clear(status, errorBox(e));
      }
    } finally {
      if (my === gen) loading = false;
    }
    if (my === gen) paint();
  }

  function reload(): Promise<void> {
    gen++;
    runs = [];
    token = "";
    more = true;
    loading = false;
    scroller.scrollTop = 0;
    paint(false);
    return loadPage();
  }

  function applyFilter(): void {
    st.filter = filterIn.value.trim();
    save();
    void reload();
  }
  filterIn.addEventListener("keydown", (e) => { if (e.key === "Enter") applyFilter(); });
  archSel.addEventListener("change", () => { st.view = archSel.value; save(); void reload(); });
  expSel.addEventListener("change", () => {
    st.experiment = expSel.value ? [expSel.value] : [];
    keys = null;
    save();
    void reload();
  });

  // --- column chooser
  let keys: { params: string[]; metrics: string[]; tags: string[] } | null = null;
  const fillPanel = async (): Promise<void> => {
    if (!keys) {
      clear(colPanel, h("div", { class: "loading", testid: "loading" }, "loading keys…"));
      try {
        keys = await ctx.get("/api/keys", { experiment: st.experiment });
      } catch (e) {
        if (!isAbort(e)) clear(colPanel, errorBox(e));
        return;
      }
    }
    const k = keys!;
    const search = h("input", { type: "text", placeholder: "search keys", testid: "column-search" });
    const list = h("div", { class: "collist" });
    const draw = (): void => {
      const q = search.value.toLowerCase();
      clear(list, (["params", "metrics", "tags"] as const).map((kind) => {
        const names = k[kind].filter((n) => n.toLowerCase().includes(q));
        return names.length ? [h("div", { class: "colhead" }, kind),
          names.map((n) => {
            const id = `${kind}.${n}`;
            return h("label", { class: "colopt" }, h("input", {
              type: "checkbox", testid: "column-option", "data-column": id,
              checked: st.columns.includes(id),
              onchange: (e: Event) => setColumn(id, (e.target as HTMLInputElement).checked) }), n);
          })] : null;
      }));
    };
    search.addEventListener("input", draw);
    clear(colPanel, search, list);
    draw();
  };
  const setColumn = (id: string, on: boolean): void => {
    st.columns = on ? [...st.columns.filter((c) => c !== id), id].slice(0, 50)
      : st.columns.filter((c) => c !== id);
    save();
    buildCols();
    void reload();
  };
  const outside = (e: MouseEvent): void => {
    if (!colPanel.hidden && !colBtn.parentElement!.contains(e.target as Node)) colPanel.hidden = true;
  };
  document.addEventListener("mousedown", outside);
  ctx.onDispose(() => document.removeEventListener("mousedown", outside));
  colBtn.addEventListener("click", () => {
    colPanel.hidden = !colPanel.hidden;
    if (!colPanel.hidden) void fillPanel();
  });

  // Both requests go out before any layout work (measuring, the first paint).
  const exps = ctx.get<{ experiments: { experiment: string; run_count: number }[] }>(
    "/api/experiments").then((r) => {
    for (const e of r.experiments) {
      expSel.append(h("option", { value: e.experiment, selected: st.experiment[0] === e.experiment },
        `${e.experiment} (${e.run_count})`));
    }
  }).catch((e) => { if (!isAbort(e)) root.prepend(errorBox(e)); });
  gen++;
  const first = loadPage();
  buildCols();
  updateSel();
  paint(false);
  await Promise.all([first, exps]);
  hooks.ready = true;
}

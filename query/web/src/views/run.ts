// Run: the header and the tabs (metrics as small multiples in one history request, ranks,
// artifacts, code & environment, inputs, reproduce, status history). While the run is
// RUNNING an EventSource on /api/follow/ID appends points and updates the status.
import { Ctx, enc, errorBox, getText, isAbort } from "../api";
import { Chart, chartControls, fromHistory, maxPointsFor, type ChartSettings,
         type SeriesData } from "../chart";
import { clear, fmtBytes, fmtDuration, fmtTime, h, statusBadge, table } from "../dom";
import { hooks } from "../hooks";
import { href, replaceQuery } from "../route";
import type { MetricHistory, MetricSummary, PointsUpdate, RankHealthReport, Run,
              StatusUpdate } from "../types";
import { kv, ranksTable, section, settingsFrom, settingsQuery } from "./common";

const TABS: [string, string][] = [
  ["metrics", "Metrics"], ["ranks", "Ranks"], ["artifacts", "Artifacts"],
  ["code", "Code & Environment"], ["inputs", "Inputs"], ["reproduce", "Reproduce"],
  ["history", "Status history"],
];
const KEYS_PER_REQUEST = 20;

export async function mountRun(ctx: Ctx, root: HTMLElement, id: string,
                               p: URLSearchParams): Promise<void> {
  let tab = TABS.some(([t]) => t === p.get("tab")) ? p.get("tab")! : "metrics";
  let settings = settingsFrom(p);
  const save = (): void => replaceQuery({ tab: tab === "metrics" ? "" : tab,
                                          ...settingsQuery(settings) });
  // Every request the first paint needs goes out now, in parallel: the Run, and for the
  // metrics tab its keys (whose answer starts the history request without waiting for
  // the Run, usually the slowest of the three).
  let run: Run = null as unknown as Run; // set once runP resolves; readers await runP first
  let runFailed = false;
  const runP = ctx.get<Run>(`/api/runs/${enc(id)}`).then((r) => { run = r; return r; });
  const metricsP = tab === "metrics"
    ? ctx.get<{ metrics: MetricSummary[] }>(`/api/runs/${enc(id)}/metrics`) : null;
  metricsP?.catch(() => undefined);
  /** The Run, or null when it could not be read (the view then shows the error). */
  const haveRun = (): Promise<Run | null> => runP.catch(() => null);
  const header = h("div", { class: "run-header", testid: "run-header", "data-run-id": id });
  const live = h("span", { class: "live", testid: "live-indicator", "data-live": "0", hidden: true },
    "● live");
  const drawHeader = (): void => {
    const i = run.info;
    clear(header,
      h("div", { class: "title" },
        h("h1", { testid: "run-name" }, i.name || i.run_id),
        h("span", { testid: "run-status", "data-status": i.status }, statusBadge(i.status)), live,
        i.archived ? h("span", { class: "badge" }, "archived") : null),
      kv("run-info", [
        ["id", h("code", { testid: "run-id" }, i.run_id)],
        ["experiment", h("a", { testid: "run-experiment",
          href: href(["runs"], { experiment: i.experiment }) }, i.experiment)],
        ["started", fmtTime(i.start_ms)],
        ["ended", i.end_ms ? fmtTime(i.end_ms) : "running"],
        ["duration", i.end_ms ? fmtDuration(i.end_ms - i.start_ms) : ""],
        ["world size", h("span", { testid: "run-world-size" }, String(i.world_size))],
        ["attempts", h("span", { testid: "run-attempts" }, String(i.attempts))],
        ["forked from", i.fork_run_id ? h("a", { testid: "fork-parent",
          href: href(["run", i.fork_run_id]) }, `${i.fork_run_id} @ step ${i.fork_step}`) : null],
        ["distributed", h("a", { testid: "distributed-link",
          href: href(["run", id, "distributed"]) }, "rank view")],
      ]));
  };
  header.append(h("div", { class: "loading", testid: "loading" }, "loading run…"));
  const headerDone = runP.then(drawHeader, (e) => {
    runFailed = true;
    if (!isAbort(e)) clear(root, errorBox(e));
  });

  const tabBar = h("div", { class: "tabs", role: "tablist" });
  const panels = new Map<string, HTMLElement>();
  const loaded = new Set<string>();
  const panelBox = h("div", { class: "panels" });
  clear(root, header, tabBar, panelBox);

  // --- metrics
  const charts = new Map<string, Chart>();
  let follow: EventSource | null = null;

  const loadMetrics = async (panel: HTMLElement): Promise<void> => {
    const controls = chartControls(settings, (s: ChartSettings) => {
      settings = s;
      save();
      charts.forEach((c) => c.setSettings(s));
    });
    const grid = h("div", { class: "multiples" });
    const status = h("div", null, h("div", { class: "loading", testid: "loading" }, "loading metrics…"));
    panel.append(controls, status, grid);
    let keys: MetricSummary[];
    try {
      keys = (await (metricsP ?? ctx.get<{ metrics: MetricSummary[] }>(
        `/api/runs/${enc(id)}/metrics`))).metrics;
    } catch (e) {
      if (!isAbort(e) && !runFailed) clear(status, errorBox(e));
      return;
    }
    if (!keys.length) {
      clear(status, h("div", { class: "muted empty", testid: "metrics-empty" }, "No metrics logged."));
      return;
    }
    // The history requests go out first, at a width estimated without a layout (the
    // grid's columns from the window's width); the charts are built while they run.
    // Labels come from the answer (several ranks: "KEY · rank R"), so the charts do not
    // wait for the Run either.
    const label = (s: MetricHistory) => (rank?: number): string =>
      rank !== undefined && (new Set(s.ranks ?? []).size > 1 || (run?.info.world_size ?? 1) > 1)
        ? `${s.key} · rank ${rank}` : s.key;
    const mp = maxPointsFor(estimateChartWidth(keys.length));
    const names = keys.map((k) => k.key);
    const chunks: string[][] = [];
    for (let i = 0; i < names.length; i += KEYS_PER_REQUEST) chunks.push(names.slice(i, i + KEYS_PER_REQUEST));
    const answers = chunks.map((chunk) => ctx.get<{ series: MetricHistory[] }>("/api/history",
      { run: id, key: chunk, max_points: mp }));
    answers.forEach((a) => a.catch(() => undefined));
    for (const m of keys) {
      const chart = new Chart({
        id: `metric:${m.key}`, title: m.key, ctx, settings, height: 180, aspect: 0.4,
        maxHeight: 320,
        refetch: async (start, end, zmp) => {
          const r = await ctx.get<{ series: MetricHistory[] }>("/api/history", {
            run: id, key: m.key, max_points: zmp, start_step: start ?? undefined,
            end_step: end ?? undefined });
          return r.series.flatMap((s) => fromHistory(s, label(s)));
        },
      });
      charts.set(m.key, chart);
      grid.append(chart.el);
    }
    try {
      await Promise.all(chunks.map(async (chunk, i) => {
        const r = await answers[i];
        const by = new Map<string, SeriesData[]>();
        for (const s of r.series) by.set(s.key, fromHistory(s, label(s)));
        for (const k of chunk) {
          const c = charts.get(k)!;
          c.countFetch(mp);
          c.setSeries(by.get(k) ?? []);
        }
      }));
      clear(status);
    } catch (e) {
      if (!isAbort(e)) clear(status, errorBox(e));
      return;
    }
    if (!(await haveRun())) return;
    if (run.info.status === "RUNNING") {
      let last = -1;
      charts.forEach((c) => { last = Math.max(last, c.lastStep()); });
      startFollow(last + 1);
    }
  };

  const startFollow = (fromStep: number): void => {
    if (follow || ctx.dead) return;
    const es = new EventSource(`/api/follow/${enc(id)}?from_step=${fromStep}`);
    follow = es;
    const hook = { runId: id, open: true, events: 0 };
    hooks.follow = hook;
    live.hidden = false;
    live.dataset.live = "1";
    const stop = (): void => {
      es.close();
      hook.open = false;
      live.dataset.live = "0";
      live.hidden = true;
    };
    ctx.onDispose(stop);
    es.addEventListener("points", (ev) => {
      hook.events++;
      const u = JSON.parse((ev as MessageEvent).data) as PointsUpdate;
      for (let i = 0; i < u.steps.length; i++) {
        const key = u.keys[u.key_index[i]];
        charts.get(key)?.append(id, key, u.ranks[i], u.steps[i], Number(u.values[i]), u.ts_ms[i]);
      }
    });
    es.addEventListener("status", (ev) => {
      hook.events++;
      const s = JSON.parse((ev as MessageEvent).data) as StatusUpdate;
      if (s.rank === 0 && s.status) {
        run = { ...run, info: { ...run.info, status: s.status } };
        drawHeader();
      }
    });
    es.addEventListener("end", async () => {
      hook.events++;
      stop();
      try {
        run = await ctx.get<Run>(`/api/runs/${enc(id)}`);
        drawHeader();
      } catch (e) {
        if (!isAbort(e)) header.append(errorBox(e));
      }
    });
  };

  // --- the other tabs
  /** A loader that draws from the Run: waits for it (nothing to draw if it failed). */
  const withRun = (f: (panel: HTMLElement) => Promise<void> | void) =>
    async (panel: HTMLElement): Promise<void> => { if (await haveRun()) await f(panel); };
  const loaders: Record<string, (panel: HTMLElement) => Promise<void> | void> = {
    metrics: loadMetrics,
    ranks: async (panel) => {
      const l = h("div", { class: "loading", testid: "loading" }, "loading ranks…");
      panel.append(l);
      try {
        const [r, theRun] = await Promise.all([
          ctx.get<RankHealthReport>(`/api/runs/${enc(id)}/ranks`), haveRun()]);
        if (!theRun) return;
        clear(panel, ranksTable(r), rankAccounting(theRun));
      } catch (e) {
        if (!isAbort(e)) clear(panel, errorBox(e));
      }
    },
    artifacts: withRun((panel) => {
      panel.append(run.artifacts.length ? table("artifacts-table",
        ["name", "size", "sha256", "uri", ""],
        run.artifacts.map((a) => h("tr", { testid: "artifact-row", "data-name": a.name },
          h("td", null, a.name), h("td", { class: "num" }, fmtBytes(a.size_bytes)),
          h("td", null, h("code", { title: a.sha256 }, a.sha256.slice(0, 16))),
          h("td", { class: "uri" }, a.uri),
          h("td", null, h("a", { testid: "artifact-download", download: "",
            href: `/api/runs/${enc(id)}/artifacts/${a.name.split("/").map(enc).join("/")}` +
                  `?sha256=${enc(a.sha256)}` }, "download")))))
        : h("div", { class: "muted empty" }, "No artifacts."));
    }),
    code: withRun((panel) => codePanel(ctx, panel, run)),
    inputs: withRun((panel) => {
      panel.append(run.inputs.length ? table("inputs-table", ["name", "role", "uri", "digest"],
        run.inputs.map((x) => h("tr", { testid: "input-row", "data-name": x.name },
          h("td", null, x.name), h("td", null, x.role), h("td", { class: "uri" }, x.uri),
          h("td", null, h("code", null, x.digest)))))
        : h("div", { class: "muted empty" }, "No inputs."));
    }),
    reproduce: async (panel) => {
      const l = h("div", { class: "loading", testid: "loading" }, "loading…");
      panel.append(l);
      try {
        const r = await ctx.get<{ text: string }>(`/api/runs/${enc(id)}/reproduce`);
        const pre = h("pre", { class: "code wrap", testid: "reproduce-text" }, r.text);
        const wrap = h("input", { type: "checkbox", testid: "reproduce-wrap", checked: true });
        wrap.addEventListener("change", () => pre.classList.toggle("wrap", wrap.checked));
        const btn = h("button", { testid: "copy-button" }, "Copy");
        btn.addEventListener("click", async () => {
          try {
            await navigator.clipboard.writeText(r.text);
            btn.textContent = "Copied";
          } catch {
            const range = document.createRange();
            range.selectNodeContents(pre);
            getSelection()?.removeAllRanges();
            getSelection()?.addRange(range);
            btn.textContent = "Selected: press Ctrl+C";
          }
        });
        clear(panel, h("div", { class: "toolbar" }, btn,
          h("label", null, wrap, " wrap long lines (off: scroll sideways)")), pre);
      } catch (e) {
        if (!isAbort(e)) clear(panel, errorBox(e));
      }
    },
    history: withRun((panel) => historyPanel(panel, run)),
  };

  const show = (t: string): Promise<void> => {
    tab = t;
    save();
    for (const [name, el] of panels) el.hidden = name !== t;
    tabBar.querySelectorAll("button").forEach((b) =>
      b.setAttribute("aria-selected", String(b.dataset.tab === t)));
    if (loaded.has(t)) return Promise.resolve();
    loaded.add(t);
    return ctx.track(Promise.resolve(loaders[t](panels.get(t)!)));
  };
  for (const [t, title] of TABS) {
    tabBar.append(h("button", { role: "tab", testid: `tab-${t}`, "data-tab": t,
                                onclick: () => void show(t) }, title));
    const panel = h("div", { class: "panel", testid: `panel-${t}`, hidden: true });
    panels.set(t, panel);
    panelBox.append(panel);
  }
  if (tab !== "metrics") {
    void headerDone.then(() => {
      if (!runFailed && run.info.status === "RUNNING") {
        startFollow(Math.max(-1, ...run.metrics.map((m) => m.last_step)) + 1);
      }
    });
  }
  await Promise.all([headerDone, show(tab)]);
}

/** A metric chart's plot width in px, from the window's width and the small-multiples
 * grid (columns of at least 420 px, 10 px gaps, the view's and a chart's padding). */
export function estimateChartWidth(charts: number): number {
  const grid = Math.max(300, window.innerWidth - 32 - 16);
  const cols = Math.max(1, Math.min(charts, Math.floor((grid + 10) / 430)));
  return Math.floor((grid - 10 * (cols - 1)) / cols) - 14;
}

function rankAccounting(run: Run): HTMLElement {
  return h("section", { class: "card" }, h("h3", null, "Points per rank"),
    table("rank-points-table", ["rank", "node", "status", "logged", "stored", "dropped", "error"],
      run.ranks.map((r) => h("tr", { testid: "rank-points-row", "data-rank": r.rank },
        h("td", null, String(r.rank)), h("td", null, r.node), h("td", null, statusBadge(r.status)),
        h("td", { class: "num" }, String(r.points_logged)),
        h("td", { class: "num" }, String(r.points_stored)),
        h("td", null, r.dropped.map((d) => `${d.reason}: ${d.points}`).join(", ")),
        h("td", { class: "problems" }, r.error)))));
}

/** A unified diff as lines coloured by kind (data-kind add/del/hunk/ctx). */
export function renderDiff(text: string): HTMLElement {
  const lines = text.split("\n");
  return h("pre", { class: "diff", testid: "diff-view" }, lines.map((l) => {
    const kind = l.startsWith("+++") || l.startsWith("---") || l.startsWith("diff ") ||
      l.startsWith("index ") ? "meta" : l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "add"
      : l.startsWith("-") ? "del" : "ctx";
    return h("div", { class: `dl ${kind}`, "data-kind": kind }, l || " ");
  }));
}

function codePanel(ctx: Ctx, panel: HTMLElement, run: Run): void {
  const c = run.code;
  const e = run.env;
  const diffBox = h("div");
  panel.append(
    section("Code", kv("code-info", [
      ["commit", c.git_commit ? h("code", { testid: "code-commit" }, c.git_commit) : "not in a git repository"],
      ["branch", c.git_branch], ["remote", c.git_remote], ["dirty", c.git_dirty ? "yes" : "no"],
      ["cwd", c.cwd], ["script", c.script], ["diff sha256", c.diff_sha256],
      ["diff stored at", c.diff_uri],
    ]), diffBox),
    section("Environment", kv("env-info", [
      ["python", e.python_version], ["os", e.os], ["host", run.ranks[0]?.node ?? e.host],
      ["command", e.command ? h("code", null, e.command) : null],
      ["argv", e.argv?.length ? h("code", null, e.argv.join(" ")) : null],
      ["launcher", e.launcher ? `${e.launcher}${e.nnodes ? `, ${e.nnodes} nodes` : ""}` +
        `${e.nproc_per_node ? ` × ${e.nproc_per_node} procs` : ""}` : ""],
      ["cpu", e.cpu_count ? `${e.cpu_count} × ${e.cpu_model}` : e.cpu_model],
      ["memory", e.memory_bytes ? fmtBytes(e.memory_bytes) : ""],
      ["gpus", e.gpus.length ? e.gpus.map((g) => `${g.name}${g.memory_bytes ? ` (${fmtBytes(g.memory_bytes)})` : ""}`).join(", ") : "none"],
      ["gpu driver", e.gpu_driver], ["cuda", e.cuda_version],
    ])),
    section(`Packages (${e.packages.length})`, e.packages.length ? h("div", { class: "scrolly" },
      table("packages-table", ["name", "version"], e.packages.map((x) => h("tr", { testid: "package-row" },
        h("td", null, x.name), h("td", null, x.version))))) : h("div", { class: "muted" }, "none recorded")),
    section("Params", run.params.length ? table("params-table", ["key", "value", "type"],
      run.params.map((x) => h("tr", { testid: "param-row", "data-key": x.key },
        h("td", null, x.key), h("td", null, x.value), h("td", { class: "muted" }, x.type))))
      : h("div", { class: "muted" }, "none"),
      run.param_conflicts.length ? table("param-conflicts-table",
        ["refused value of", "rank", "value", "when"],
        run.param_conflicts.map((x) => h("tr", null, h("td", null, x.key), h("td", null, String(x.rank)),
          h("td", null, x.value), h("td", null, fmtTime(x.ts_ms))))) : null),
    section("Tags", run.tags.length ? table("tags-table", ["key", "value"],
      run.tags.map((x) => h("tr", { testid: "tag-row" }, h("td", null, x.key), h("td", null, x.value))))
      : h("div", { class: "muted" }, "none")),
  );
  if (!c.git_dirty) return;
  // The stored `git diff HEAD` (the artifact store keeps it by its digest).
  void ctx.track(getText(`/api/runs/${enc(run.info.run_id)}/diff`, ctx.ac.signal))
    .then((t) => diffBox.append(t === null
      ? h("div", { class: "muted", testid: "diff-unavailable" },
        "The working tree was dirty, but this server's artifact store does not hold the diff.")
      : renderDiff(t)))
    .catch((err) => { if (!isAbort(err)) diffBox.append(errorBox(err)); });
}

function historyPanel(panel: HTMLElement, run: Run): void {
  panel.append(
    section("Attempts", table("attempts-table",
      ["attempt", "restart", "resume", "world size", "status", "started", "ended", "error"],
      run.attempts.map((a) => h("tr", { testid: "attempt-row", "data-attempt": a.attempt },
        h("td", null, String(a.attempt)), h("td", null, String(a.restart)),
        h("td", null, a.resume ? "yes" : ""), h("td", null, String(a.world_size)),
        h("td", null, statusBadge(a.status || "?")), h("td", null, fmtTime(a.start_ms)),
        h("td", null, a.end_ms ? fmtTime(a.end_ms) : ""), h("td", { class: "problems" }, a.error))))),
    section("Notes", run.notes.length ? h("ul", { class: "notes", testid: "notes-list" },
      run.notes.map((n) => h("li", { testid: "note" }, h("span", { class: "muted" },
        `${fmtTime(n.ts_ms)} ${n.user}${n.host ? `@${n.host}` : ""}: `), n.text)))
      : h("div", { class: "muted", testid: "notes-list" }, "No notes.")),
    section("Changes", run.changes.length ? table("changes-table", ["when", "who", "what"],
      run.changes.map((c) => h("tr", { testid: "change-row" }, h("td", null, fmtTime(c.ts_ms)),
        h("td", null, `${c.user}${c.host ? `@${c.host}` : ""}`), h("td", null, c.what))))
      : h("div", { class: "muted", testid: "changes-table" }, "No changes.")),
  );
}

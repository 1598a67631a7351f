// Entry point: the top bar, the router and the view lifecycle.
import "./style.css";
import { Ctx } from "./api";
import { clear, h } from "./dom";
import { hooks, resetHooks } from "./hooks";
import { parseHash } from "./route";
import { mountRuns } from "./views/runs";
import { mountRun } from "./views/run";
import { mountCompare } from "./views/compare";
import { mountDistributed } from "./views/distributed";
import { mountIngest } from "./views/ingest";

// Performance marks (performance.getEntriesByType("mark")): rs:boot when the bundle runs,
// rs:mount:<view> when a route mounts, rs:ready:<view> when its first load is done, and
// rs:draw:<chart id> each time a chart is drawn. The /api requests are resource entries.
performance.mark("rs:boot");
const root = h("main", { id: "view", testid: "view", "data-loading": "0" });
let current: Ctx | null = null;

function nav(): HTMLElement {
  return h("header", { class: "top" },
    h("a", { href: "#/runs", class: "brand" }, "Runstream"),
    h("a", { href: "#/runs", testid: "nav-runs" }, "Runs"),
    h("a", { href: "#/ingest", testid: "nav-ingest" }, "Ingestion"));
}

/** Mount the view the hash names, disposing the previous one (its requests, streams). */
async function route(): Promise<void> {
  current?.dispose();
  const { parts, params } = parseHash();
  const ctx = new Ctx(root);
  current = ctx;
  clear(root);
  const [head, id, sub] = parts;
  let view = "runs";
  let mount: () => Promise<void>;
  if (head === "run" && id && sub === "distributed") {
    view = "distributed";
    mount = () => mountDistributed(ctx, root, id, params);
  } else if (head === "run" && id) {
    view = "run";
    mount = () => mountRun(ctx, root, id, params);
  } else if (head === "compare") {
    view = "compare";
    mount = () => mountCompare(ctx, root, params);
  } else if (head === "ingest") {
    view = "ingest";
    mount = () => mountIngest(ctx, root);
  } else {
    mount = () => mountRuns(ctx, root, params);
  }
  resetHooks(view);
  performance.mark(`rs:mount:${view}`);
  try {
    await mount();
  } catch (e) {
    console.error(e);
  } finally {
    if (!ctx.dead) {
      hooks.ready = true;
      performance.mark(`rs:ready:${view}`);
    }
  }
}

document.body.append(nav(), root);
window.addEventListener("hashchange", () => void route());
if (!location.hash) history.replaceState(null, "", "#/runs");
void route();

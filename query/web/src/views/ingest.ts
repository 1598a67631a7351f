// Ingestion: the consumers' latest progress per source partition; Refresh re-reads it.
import { Ctx, errorBox, isAbort } from "../api";
import { clear, fmtNum, fmtTime, h, table } from "../dom";
import type { IngestPartition } from "../types";

export async function mountIngest(ctx: Ctx, root: HTMLElement): Promise<void> {
  const box = h("div");
  const stamp = h("span", { class: "muted" });
  const btn = h("button", { testid: "ingest-refresh" }, "Refresh");
  root.append(h("div", { class: "title" }, h("h1", null, "Ingestion"), btn, stamp), box);
  const load = async (): Promise<void> => {
    btn.disabled = true;
    clear(box, h("div", { class: "loading", testid: "loading" }, "loading…"));
    try {
      const r = await ctx.get<{ partitions: IngestPartition[] }>("/api/ingest");
      stamp.textContent = ` read ${fmtTime(Date.now())}`;
      clear(box, r.partitions.length ? table("ingest-table",
        ["consumer", "source", "topic / partition", "points/s", "batch latency ms", "lag",
         "committed", "end", "points", "reported"],
        r.partitions.map((x) => h("tr", { testid: "ingest-row", "data-consumer": x.consumer_id,
                                          "data-topic": x.topic, "data-partition": x.partition },
          h("td", null, x.consumer_id), h("td", null, x.source),
          h("td", null, `${x.topic} / ${x.partition}`),
          h("td", { class: "num" }, fmtNum(x.points_per_s)),
          h("td", { class: "num" }, fmtNum(x.batch_latency_ms)),
          h("td", { class: `num${x.lag > 0 ? " warn" : ""}` }, String(x.lag)),
          h("td", { class: "num" }, String(x.committed_offset)),
          h("td", { class: "num" }, String(x.end_offset)),
          h("td", { class: "num" }, String(x.points_total)),
          h("td", null, fmtTime(x.ts_ms)))))
        : h("div", { class: "muted", testid: "ingest-table" }, "No consumer has reported yet."));
    } catch (e) {
      if (!isAbort(e)) clear(box, errorBox(e));
    } finally {
      btn.disabled = false;
    }
  };
  btn.addEventListener("click", () => void ctx.track(load()));
  await ctx.track(load());
}

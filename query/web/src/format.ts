// Axis tick labels: as short as the tick spacing allows (no DOM, no uPlot: testable alone).
import { fmtNum } from "./dom";

const SI: [number, string][] = [[1e12, "T"], [1e9, "G"], [1e6, "M"]];
const GROUPED = new Map<number, Intl.NumberFormat>();
const grouped = (digits: number): Intl.NumberFormat => {
  let f = GROUPED.get(digits);
  if (!f) {
    f = new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    GROUPED.set(digits, f);
  }
  return f;
};
/** Decimal places that write a multiple of `incr` exactly (0.025 -> 3, 50 -> 0). */
export function digitsFor(incr: number): number {
  const [m, e] = Number(incr.toPrecision(10)).toExponential().split("e");
  return Math.max(0, Math.min(12, (m.split(".")[1] ?? "").length - Number(e)));
}

/** One number in 3 significant digits: SI suffix from a million, exponent below 0.001. */
export function fmtSig(v: number): string {
  if (!Number.isFinite(v)) return fmtNum(v);
  const a = Math.abs(v);
  if (a === 0) return "0";
  for (const [d, u] of SI) if (a >= d) return `${Number((v / d).toPrecision(3))}${u}`;
  if (a < 1e-3) return v.toExponential(2).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(3)));
}

/** Tick labels as short as the tick spacing allows: as many decimals as `incr` needs
 * (so 0.01201 and 0.01202 stay apart), an SI suffix from a million, an exponent when
 * every tick is below 0.001. Without a usable increment (log scales): fmtSig. */
export function fmtTicks(vals: number[], incr: number | undefined): string[] {
  const fin = vals.filter((v) => Number.isFinite(v));
  if (!fin.length) return vals.map((v) => fmtNum(v));
  if (!(incr !== undefined && incr > 0 && Number.isFinite(incr))) return vals.map(fmtSig);
  const mag = Math.max(...fin.map(Math.abs));
  const unit = SI.find(([d]) => mag >= d);
  if (unit) {
    const [d, u] = unit;
    const dg = digitsFor(incr / d);
    return vals.map((v) => (v === 0 ? "0" : `${(v / d).toFixed(dg)}${u}`));
  }
  if (mag > 0 && mag < 1e-3) {
    const sig = Math.max(0, Math.min(6, digitsFor(incr) + Math.floor(Math.log10(mag))));
    return vals.map((v) => (v === 0 ? "0" : v.toExponential(sig)));
  }
  const f = grouped(digitsFor(incr));
  return vals.map((v) => f.format(v));
}

/** Tick increments of a step axis: whole numbers only (1, 2, 5, 10, 20, 50, ...). */
export const INT_INCRS: number[] = [];
for (let e = 1; e <= 1e15; e *= 10) INT_INCRS.push(e, 2 * e, 5 * e);

// A small parallel-coordinates plot on a canvas: one vertical axis per dimension
// (linear, min..max of its values), one polyline per item; missing values break the line.

export function drawParcoords(canvas: HTMLCanvasElement, axes: { name: string; values: number[] }[],
                              colors: string[], labels: string[]): void {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.width;
  const cssH = Number(canvas.getAttribute("height")) || 300;
  canvas.style.width = `${cssW}px`;
  canvas.style.height = `${cssH}px`;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  const g = canvas.getContext("2d");
  if (!g) return;
  g.scale(dpr, dpr);
  const css = getComputedStyle(document.body);
  const fg = css.getPropertyValue("--fg").trim() || "#222";
  const fg2 = css.getPropertyValue("--fg2").trim() || "#666";
  g.clearRect(0, 0, cssW, cssH);
  g.font = "12px system-ui, sans-serif";
  if (axes.length === 0) {
    g.fillStyle = fg2;
    g.fillText("No differing numeric params and no metric to plot.", 10, 20);
    return;
  }
  const top = 40;
  const bottom = cssH - 20;
  const left = 60;
  const right = cssW - 110;
  const xs = axes.map((_, i) => (axes.length === 1 ? (left + right) / 2
    : left + (i * (right - left)) / (axes.length - 1)));
  const ranges = axes.map((a) => {
    const f = a.values.filter(Number.isFinite);
    const lo = Math.min(...f);
    const hi = Math.max(...f);
    return f.length ? (lo === hi ? [lo - 1, hi + 1] : [lo, hi]) : [0, 1];
  });
  const y = (i: number, v: number): number =>
    bottom - ((v - ranges[i][0]) / (ranges[i][1] - ranges[i][0])) * (bottom - top);
  const n = axes[0].values.length;
  for (let r = 0; r < n; r++) {
    g.strokeStyle = colors[r];
    g.lineWidth = 1.6;
    g.beginPath();
    let pen = false;
    axes.forEach((a, i) => {
      const v = a.values[r];
      if (!Number.isFinite(v)) { pen = false; return; }
      if (pen) g.lineTo(xs[i], y(i, v)); else g.moveTo(xs[i], y(i, v));
      pen = true;
    });
    g.stroke();
    const lastV = axes[axes.length - 1].values[r];
    if (Number.isFinite(lastV)) {
      g.fillStyle = colors[r];
      g.fillText(labels[r].slice(0, 16), xs[xs.length - 1] + 8, y(axes.length - 1, lastV) + 4);
    }
  }
  axes.forEach((a, i) => {
    g.strokeStyle = fg2;
    g.lineWidth = 1;
    g.beginPath();
    g.moveTo(xs[i], top);
    g.lineTo(xs[i], bottom);
    g.stroke();
    g.fillStyle = fg;
    g.textAlign = "center";
    g.fillText(a.name.slice(0, 24), xs[i], top - 22);
    g.fillStyle = fg2;
    g.fillText(fmt(ranges[i][1]), xs[i], top - 6);
    g.fillText(fmt(ranges[i][0]), xs[i], bottom + 14);
    g.textAlign = "left";
  });
}

const fmt = (v: number): string => (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3)
  ? v.toExponential(2) : String(Number(v.toPrecision(4))));

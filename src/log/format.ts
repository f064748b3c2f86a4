// Ages, relative times and sizes as people read them, shared by the CLI, the console and the
// alerts (ground floor: imports nothing). Config values are echoed by config/units.ts
// formatDuration instead, which keeps the unit the operator can type back.

/** A span of time, coarse to fine: `45s`, `12m`, `3h5m`, `2d4h`. */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${m % 60 ? `${m % 60}m` : ''}`;
  const d = Math.floor(h / 24);
  return `${d}d${h % 24 ? `${h % 24}h` : ''}`;
}

/** A moment seen from `now`: `in 12m` or `3h5m ago`. */
export function formatRelative(t: number, now: number): string {
  return t >= now ? `in ${formatAge(t - now)}` : `${formatAge(now - t)} ago`;
}

export function formatSize(n: number): string {
  if (n < 1024) return `${n}B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)}K`;
  return `${(n / 1024 / 1024).toFixed(1)}M`;
}

/** A structural difference between two configuration values, for `muster config diff`. */

/** One change at a JSON path (`$.a.b[2]`). */
export interface ValueChange {
  readonly path: string;
  readonly kind: 'added' | 'removed' | 'changed';
  readonly before?: unknown;
  readonly after?: unknown;
}

/** Lists the leaves that differ between `a` and `b`, in path order. */
export function diffValues(a: unknown, b: unknown, path = '$'): ValueChange[] {
  if (Object.is(a, b)) return [];
  if (isObject(a) && isObject(b)) {
    const out: ValueChange[] = [];
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const k of keys) {
      const p = /^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`;
      if (!(k in b)) out.push({ path: p, kind: 'removed', before: a[k] });
      else if (!(k in a)) out.push({ path: p, kind: 'added', after: b[k] });
      else out.push(...diffValues(a[k], b[k], p));
    }
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const out: ValueChange[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const p = `${path}[${i}]`;
      if (i >= b.length) out.push({ path: p, kind: 'removed', before: a[i] });
      else if (i >= a.length) out.push({ path: p, kind: 'added', after: b[i] });
      else out.push(...diffValues(a[i], b[i], p));
    }
    return out;
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [{ path, kind: 'changed', before: a, after: b }];
}

function isObject(x: unknown): x is Record<string, unknown> {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/**
 * A checker for the store's revision guarantee: every committed write transaction takes exactly the
 * next revision (no gaps, no duplicates), and a watch delivers them in increasing order.
 *
 * `checkRevisions` takes the revisions acknowledged to concurrent writers (which, between `from` and
 * `to`, must be the only writers) and, optionally, the revisions a watch delivered in the order it
 * delivered them, and reports every violation.
 */
export type RevisionViolation =
  | { readonly kind: 'gap'; readonly revision: number }
  | { readonly kind: 'duplicate'; readonly revision: number }
  | { readonly kind: 'out-of-range'; readonly revision: number }
  | { readonly kind: 'watch-order'; readonly revision: number; readonly after: number }
  | { readonly kind: 'watch-missed'; readonly revision: number };

/**
 * Checks that `acked` is exactly the revisions `from + 1 … to` (each once), and that `watched` (if
 * given) is strictly increasing and holds every acknowledged revision. Returns the violations.
 */
export function checkRevisions(
  acked: readonly number[],
  from: number,
  to: number,
  watched?: readonly number[],
): RevisionViolation[] {
  const violations: RevisionViolation[] = [];
  const seen = new Set<number>();
  for (const r of acked) {
    if (r <= from || r > to) violations.push({ kind: 'out-of-range', revision: r });
    else if (seen.has(r)) violations.push({ kind: 'duplicate', revision: r });
    seen.add(r);
  }
  for (let r = from + 1; r <= to; r++) if (!seen.has(r)) violations.push({ kind: 'gap', revision: r });
  if (watched !== undefined) {
    let last = from;
    for (const r of watched) {
      if (r <= last) violations.push({ kind: 'watch-order', revision: r, after: last });
      last = Math.max(last, r);
    }
    const delivered = new Set(watched);
    for (const r of seen) if (!delivered.has(r)) violations.push({ kind: 'watch-missed', revision: r });
  }
  return violations;
}
